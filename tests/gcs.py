"""A real GCS emulator for tests: PyPI `gcp-storage-emulator`, in memory, in a subprocess on a free port."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path


@dataclass
class GcsEmulator:
    """A running GCS emulator; `url` is what STORAGE_EMULATOR_HOST should be."""

    url: str
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        """Stop the emulator and wait for it to exit."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def executable() -> str | None:
    """The `gcp-storage-emulator` command beside this Python, or on PATH; None when it is not installed."""
    beside = Path(sys.executable).parent / "gcp-storage-emulator"
    return str(beside) if beside.exists() else shutil.which("gcp-storage-emulator")


def start_gcs_emulator(timeout: float = 20.0) -> GcsEmulator:
    """Start an in-memory GCS emulator on 127.0.0.1 and return once it answers HTTP."""
    command = executable()
    if command is None:
        raise FileNotFoundError("gcp-storage-emulator is not installed (pip install -e '.[test]')")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen([command, "start", "--host", "127.0.0.1", "--port", str(port), "--in-memory"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    emulator = GcsEmulator(f"http://127.0.0.1:{port}", process)
    deadline = time.monotonic() + timeout
    while not _answers(emulator.url):
        if process.poll() is not None or time.monotonic() > deadline:
            emulator.stop()
            raise RuntimeError(f"gcp-storage-emulator did not answer on port {port} (exit {process.poll()})")
        time.sleep(0.05)
    return emulator


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/storage/v1/b?project=test", timeout=1) as resp:
            return bool(resp.status)
    except urllib.error.HTTPError:
        return True  # any HTTP answer means it is serving
    except OSError:
        return False
