"""A real GCS emulator for tests: PyPI `gcp-storage-emulator`, in memory, in a subprocess on a free port."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from servers import Server, free_port, start_server


def executable() -> str | None:
    """The `gcp-storage-emulator` command beside this Python, or on PATH; None when it is not installed."""
    beside = Path(sys.executable).parent / "gcp-storage-emulator"
    return str(beside) if beside.exists() else shutil.which("gcp-storage-emulator")


def start_gcs_emulator(timeout: float = 20.0) -> Server:
    """Start an in-memory GCS emulator on 127.0.0.1 and return once it answers HTTP.

    Its `url` is what STORAGE_EMULATOR_HOST should be.
    """
    program = executable()
    if program is None:
        raise FileNotFoundError("gcp-storage-emulator is not installed (pip install -e '.[test]')")
    port = free_port()
    command = [program, "start", "--host", "127.0.0.1", "--port", str(port), "--in-memory"]
    return start_server("gcp-storage-emulator", command, port, "/storage/v1/b?project=test", timeout, 0.05)
