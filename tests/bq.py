"""A real BigQuery emulator for tests: PyPI `bqemulator` (DuckDB + sqlglot), in memory, in a subprocess.

Offline, bqemulator stops at start trying to download DuckDB's `spatial` extension; the few lines in `_LAUNCH`
replace `DuckDBEngine._load_spatial` with a no-op first (no GEOGRAPHY, which batchflow does not use), then run
its own `start` command (API_NOTES.md, "Local stand-ins").
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

_LAUNCH = """
import sys
from bqemulator.storage.engine import DuckDBEngine
DuckDBEngine._load_spatial = lambda self: None
from bqemulator.cli import main
sys.exit(main(sys.argv[1:]))
"""


@dataclass
class BigQueryEmulator:
    """A running BigQuery emulator; `url` is what BIGQUERY_EMULATOR_HOST should be."""

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


def installed() -> bool:
    """Whether bqemulator and google-cloud-bigquery are importable here."""
    return all(importlib.util.find_spec(m) is not None for m in ("bqemulator", "google.cloud.bigquery"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_bigquery_emulator(project: str = "test", timeout: float = 60.0) -> BigQueryEmulator:
    """Start an in-memory BigQuery emulator on 127.0.0.1 and return once it answers HTTP."""
    port = _free_port()
    command = [sys.executable, "-c", _LAUNCH, "start", "--rest-host", "127.0.0.1", "--rest-port", str(port),
               "--grpc-host", "127.0.0.1", "--grpc-port", str(_free_port()), "--ephemeral", "--project", project,
               "--log-level", "warning"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    emulator = BigQueryEmulator(f"http://127.0.0.1:{port}", process)
    deadline = time.monotonic() + timeout
    while not _answers(emulator.url, project):
        if process.poll() is not None or time.monotonic() > deadline:
            emulator.stop()
            raise RuntimeError(f"bqemulator did not answer on port {port} (exit {process.poll()})")
        time.sleep(0.1)
    return emulator


def _answers(url: str, project: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/bigquery/v2/projects/{project}/datasets", timeout=1) as resp:
            return bool(resp.status)
    except urllib.error.HTTPError:
        return True  # any HTTP answer means it is serving
    except OSError:
        return False
