"""Running the emulator: `serve` for the command line, `start_in_thread` for in-process use and tests."""

from __future__ import annotations

import errno
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType, TracebackType

from batchflow.emulator.engine import Emulator
from batchflow.emulator.faults.plan import FaultPlan, load_faults
from batchflow.emulator.http import EmulatorServer
from batchflow.errors import InputError


class RunningEmulator:
    """An emulator serving from a background thread; a context manager that stops it on exit."""

    def __init__(self, server: EmulatorServer, engine: Emulator) -> None:
        self.engine = engine
        self._server = server
        self.base_url = _base_url(server)
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="emulator-http", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving, close the socket and the engine's worker; safe to call twice."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()
        self.engine.close()

    def __enter__(self) -> RunningEmulator:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def start_in_thread(data_dir: Path, job_seconds: float = 0.0, host: str = "127.0.0.1", port: int = 0,
                    faults: FaultPlan | Path | None = None, clock: Callable[[], float] = time.time) -> RunningEmulator:
    """Start an emulator on `host:port` (0 = a free port) in a background thread, with a fault plan if given, on
    `clock` (a test's own clock ages files and jobs without waiting)."""
    engine = Emulator(Path(data_dir), job_seconds, clock=clock, faults=_plan(faults))
    return RunningEmulator(EmulatorServer((host, port), engine), engine)


def _cannot_listen(host: str, port: int, exc: OSError) -> str:
    """Why the emulator cannot serve where it was asked to, and what to do: a port taken is the usual case."""
    if exc.errno == errno.EADDRINUSE:
        return f"port {port} on {host} is in use; pick another with --port (0 picks a free one)"
    return f"cannot listen on {host}:{port}: {exc.strerror or exc}"


def serve(host: str, port: int, data_dir: Path, job_seconds: float, faults: FaultPlan | Path | None) -> None:
    """Serve until SIGTERM or SIGINT; the first line on stdout is the base URL. A bad fault plan raises
    FaultPlanError before anything is bound."""
    engine = Emulator(Path(data_dir), job_seconds, faults=_plan(faults))
    try:
        server = EmulatorServer((host, port), engine)
    except OSError as exc:
        engine.close()
        raise InputError(_cannot_listen(host, port, exc)) from None
    print(_base_url(server), flush=True)

    def stop(signum: int, frame: FrameType | None) -> None:
        # not an exception: raised in the main thread it could land inside socketserver's own request
        # handling, which swallows it. shutdown() must run off the thread that runs serve_forever.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        engine.close()
        sys.stdout.flush()


def _plan(faults: FaultPlan | Path | None) -> FaultPlan:
    return load_faults(faults) if faults is None or isinstance(faults, Path) else faults


def _base_url(server: EmulatorServer) -> str:
    host, port = server.server_address[:2]
    host = str(host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
