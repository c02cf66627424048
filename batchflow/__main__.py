from batchflow.cli import main

main(prog_name="batchflow")  # as the installed command: `python -m batchflow` completes under _BATCHFLOW_COMPLETE
