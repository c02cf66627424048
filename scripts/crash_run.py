"""One `batchflow run` for the crash harness: started (forked or spawned), SIGKILLed, and what it was doing.

A forked run writes a marker line to a file before each thing it does (observation only: the runner's and the
backend's methods are wrapped to write a line, then called unchanged), so the harness knows the phase a kill landed
in. A spawned run has no markers: its phase is guessed from the state file it left (`phase_from_state`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

# imported before forking, so that forked runs start at once
import google.genai.batches
import google.genai.files  # noqa: F401

import batchflow.backends.gemini
import batchflow.execute.runner
import batchflow.execute.shards_path
import batchflow.state.gcs
import batchflow.state.state
from batchflow.answers.merge import output_fingerprint
from batchflow.cli import main as cli_main
from batchflow.execute import plan as p
from batchflow.spec.spec import Spec
from batchflow.state import state as st

# marker written before each method: (owner, attribute, phase)
_MARKED: tuple[tuple[Any, str, str], ...] = (
    (batchflow.execute.runner.Runner, "current", "startup"),
    (batchflow.execute.shards_path, "prepare", "prepare"),
    (batchflow.backends.gemini.GeminiBackend, "stage", "upload"),
    (batchflow.backends.gemini.GeminiBackend, "create", "create"),
    (batchflow.execute.runner.Runner, "_adopt", "adopt"),
    (batchflow.execute.runner.Runner, "_poll", "poll"),
    (batchflow.execute.runner.Runner, "_pause", "wait"),
    (batchflow.execute.runner.Runner, "_collect", "collect"),
    (batchflow.execute.runner.Runner, "_settle", "settle"),
    (batchflow.execute.runner.Runner, "_keep", "keep"),
    (batchflow.execute.runner.Runner, "_merge", "merge"),
)

# kill points of a gs:// state (``--commit-kills``): the run SIGKILLs itself at the nth time it gets there
KILL_POINTS: dict[str, tuple[Any, str, str]] = {
    "uploaded": (batchflow.state.gcs.GcsState, "_upload_files", "after"),  # objects up, the manifest not committed
    "collecting": (batchflow.state.gcs.GcsState, "_collect_garbage", "before"),  # committed, garbage not deleted
    "committed": (batchflow.state.gcs.GcsState, "push", "after"),  # the manifest committed (and garbage deleted)
}


class Run:
    """One `batchflow run [OPTIONS] SPEC`, its stdout and stderr in `log`."""

    def __init__(self, spec: Path, log: Path, spawn: bool, options: tuple[str, ...] = (),
                 kill_at: tuple[str, int] | None = None) -> None:
        args = ["--log-format", "json", "run", *options, str(spec)]
        self.marks = log.with_suffix(".marks")
        self.proc: subprocess.Popen[bytes] | None = None
        if spawn:
            with open(log, "wb") as out:
                self.proc = subprocess.Popen([sys.executable, "-m", "batchflow", *args], stdout=out, stderr=out)
            return
        sys.stdout.flush()
        sys.stderr.flush()
        self.pid = os.fork()
        if self.pid == 0:  # the child: run the CLI with stdout and stderr in the log; never returns
            code = 1
            try:
                fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.dup2(fd, 1)
                os.dup2(fd, 2)
                _instrument(self.marks)
                if kill_at is not None:
                    _kill_at(*kill_at)
                cli_main.main(args, prog_name="batchflow")
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)

    def poll(self) -> int | None:
        """The exit code once the run has ended, else None."""
        if self.proc is not None:
            return self.proc.poll()
        pid, status = os.waitpid(self.pid, os.WNOHANG)
        return None if pid == 0 else os.waitstatus_to_exitcode(status)

    def kill(self) -> None:
        """SIGKILL, and reap."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
        else:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)

    def last_mark(self) -> str | None:
        """The phase the run last said it entered (forked runs only)."""
        lines = self.marks_so_far()
        return lines[-1] if lines else None

    def marks_so_far(self) -> list[str]:
        """Every phase the run said it entered, in order (forked runs only; a spawned run: none)."""
        try:
            return self.marks.read_text().split()
        except FileNotFoundError:
            return []


def _instrument(marks: Path) -> None:
    fd = os.open(marks, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)

    def mark(phase: str) -> None:
        os.write(fd, phase.encode() + b"\n")

    def marked(fn: Callable[..., Any], phase: str) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            mark(phase)
            return fn(*args, **kwargs)

        return wrapper

    mark("startup")
    for owner, attr, phase in _MARKED:
        if hasattr(owner, attr):  # a renamed method only costs its marker
            setattr(owner, attr, marked(getattr(owner, attr), phase))
    run = batchflow.execute.runner.Runner.run

    def run_then_exit(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = run(self, *args, **kwargs)
        mark("exit")
        return result

    batchflow.execute.runner.Runner.run = run_then_exit  # type: ignore[method-assign]


def _kill_at(point: str, nth: int) -> None:
    """The run SIGKILLs itself the ``nth`` time it gets to ``point`` (``KILL_POINTS``), unless it ends before."""
    owner, attr, when = KILL_POINTS[point]
    fn, seen = getattr(owner, attr), [0]

    def die() -> None:
        seen[0] += 1
        if seen[0] == nth:
            os.kill(os.getpid(), signal.SIGKILL)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if when == "before":
            die()
        result = fn(*args, **kwargs)
        if when == "after":
            die()
        return result

    setattr(owner, attr, wrapper)


def phase_from_state(spec: Spec, started: float) -> str:
    """A guess at what a killed run was doing: the first step of the plan it had yet to finish."""
    root = spec.state_dir / spec.name
    state = batchflow.state.state.state_store(spec).load()  # a StateError here is a finding: the caller reports it
    if state is None:
        tmp = root / "gen-1.tmp"
        return "prepare" if tmp.exists() and tmp.stat().st_mtime >= started else "startup"
    if state.merged is not None:
        return "exit"
    plan = p.make_plan(state, time.time(), spec.jobs.max_concurrent, output_fingerprint(spec),
                       Path(spec.output.path or "").exists())
    for step in plan.steps:
        match step:
            case p.Adopt():
                return "adopt"
            case p.Submit(shard, n):
                return "upload" if state.shards[shard].jobs[n - 1].status == st.WRITTEN else "create"
            case p.Collect():
                return "collect"
            case p.Settle():
                return "settle"
            case p.Keep():
                return "keep"
            case p.Merge():
                return "merge"
    return "poll" if plan.steps else "wait"
