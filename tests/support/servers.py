"""Real local servers for tests, each in a subprocess on 127.0.0.1: started, waited on until they answer, stopped."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Server:
    """A running server subprocess; `url` is its `http://127.0.0.1:PORT`."""

    url: str
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        """Stop the server and wait for it to exit."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(name: str, command: list[str], port: int, probe: str, timeout: float, poll: float) -> Server:
    """Run `command` (serving on `port`) and return once GET `probe` gets any HTTP answer; stop it on failure."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    server = Server(f"http://127.0.0.1:{port}", process)
    deadline = time.monotonic() + timeout
    while not _answers(server.url + probe):
        if process.poll() is not None or time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"{name} did not answer on port {port} (exit {process.poll()})")
        time.sleep(poll)
    return server


@contextmanager
def batchflow_emulator(data_dir: Path, job_seconds: float, faults: Path | None = None, **env: str) -> Iterator[str]:
    """A separately started `batchflow emulator`, as a user would run one; yields the base URL it prints first."""
    proc = subprocess.Popen([sys.executable, "-m", "batchflow", "emulator", "--host", "127.0.0.1", "--port", "0",
                             "--data-dir", str(data_dir), "--job-seconds", str(job_seconds),
                             *(["--faults", str(faults)] if faults else [])],
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1", **env})
    assert proc.stdout is not None
    try:
        yield proc.stdout.readline().split()[0]
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stdout.close()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return bool(resp.status)
    except urllib.error.HTTPError:
        return True  # any HTTP answer means it is serving
    except OSError:
        return False
