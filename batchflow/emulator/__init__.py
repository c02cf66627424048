"""A local emulator of the Gemini Developer API's batch and Files REST surface, and of Vertex AI's
`batchPredictionJobs` (reading and writing gs:// through gcsfs, e.g. against a GCS emulator).

`serve` runs it for `batchflow emulator`; `start_in_thread` runs it inside a process (the `local` backend and
the tests); `Emulator` is the engine (jobs, files, deterministic model) without HTTP.
"""

from batchflow.emulator.engine import Emulator
from batchflow.emulator.server import RunningEmulator, serve, start_in_thread

__all__ = ["Emulator", "RunningEmulator", "serve", "start_in_thread"]
