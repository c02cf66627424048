from batchflow.cli import entry

entry()  # as the installed command: `python -m batchflow` completes under _BATCHFLOW_COMPLETE
