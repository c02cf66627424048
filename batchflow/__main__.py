from batchflow.cli import main

main()
