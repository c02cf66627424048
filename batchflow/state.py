"""The state file: every shard and job of one spec, written atomically, under a lock.

Layout of ``<state_dir>/<spec name>/``::

    state.json          this file's content (below)
    lock, lock.json     the run lock and who holds it
    shards/             shard-00000.jsonl (request lines) + shard-00000.manifest.jsonl (the records, line for line)
    jobs/               the input of each retry job (a subset of a shard's lines)
    results/            the collected output of each job, one normalised line per request
    emulator/           the embedded emulator's data (local backend)

A job moves through named states: written -> staged -> submitting -> submitted -> running -> succeeded |
failed | expired | cancelled -> collected. "submitting" is saved *before* ``create`` is called, with the job's
deterministic display name, so a run that finds it there looks the job up instead of creating another.
"""

from __future__ import annotations

import dataclasses
import getpass
import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import filelock

from batchflow.errors import LockedError, StateError

STATE_FORMAT = 2  # 2: a manifest line is the record alone (1: key and record); both are read

WRITTEN = "written"
STAGED = "staged"
SUBMITTING = "submitting"
SUBMITTED = "submitted"
RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
EXPIRED = "expired"
CANCELLED = "cancelled"
COLLECTED = "collected"

IN_FLIGHT = frozenset({STAGED, SUBMITTING, SUBMITTED, RUNNING})
REMOTE = frozenset({SUBMITTED, RUNNING})
FINISHED = frozenset({SUCCEEDED, FAILED, EXPIRED, CANCELLED})


@dataclass
class Job:
    """One batch job: a shard's first submission or a retry of some of its requests."""

    n: int  # 1-based, per shard
    input: str  # request lines, relative to the state dir
    count: int
    digest: str  # of the input's bytes; part of the display name
    display_name: str
    status: str = WRITTEN
    kind: str = "shard"  # shard | retry (failed requests) | resubmit (a failed / expired job's unfinished part)
    file: str | None = None  # the staged input, e.g. files/abc or gs://...
    name: str | None = None  # the backend's job name, e.g. batches/xyz
    output: str | None = None  # where the backend put the results
    error: str | None = None
    ended: str | None = None  # the final job state (succeeded, failed, ...) once finished; kept after collection
    not_before: float = 0.0  # epoch seconds: backoff before staging, or before looking a job up again
    lookups: int = 0  # times a job left "submitting" was looked up and not found
    results: str | None = None  # collected lines, relative to the state dir
    ok: int = 0
    failed: int = 0
    created_at: float | None = None
    finished_at: float | None = None


@dataclass
class Shard:
    index: int
    count: int
    bytes: int
    digest: str
    requests: str  # relative to the state dir
    manifest: str
    jobs: list[Job] = field(default_factory=list)
    done: bool = False  # every record has its final result (ok, or out of attempts)

    @property
    def current(self) -> Job | None:
        return self.jobs[-1] if self.jobs else None


@dataclass
class State:
    spec_name: str
    fingerprint: str  # of everything that decides the request lines
    records: int = 0
    shards: list[Shard] = field(default_factory=list)
    created_at: float = field(default_factory=time.time)
    cancelled_at: float | None = None
    merged: dict[str, Any] | None = None  # {"output": fingerprint, "rows", "ok", "failed", "at"}
    format: int = STATE_FORMAT

    def jobs(self) -> list[tuple[Shard, Job]]:
        return [(s, j) for s in self.shards for j in s.jobs]

    @property
    def done(self) -> bool:
        return bool(self.shards) and all(s.done for s in self.shards)


class StateStore:
    """Reads and writes one spec's state directory."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.path = directory / "state.json"

    def load(self) -> State | None:
        """The saved state, or None when nothing was saved yet."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateError(f"{self.path}: cannot read the state: {exc.strerror}") from exc
        return _decode(self.path, text)

    def save(self, state: State) -> None:
        """Write the state atomically: a crash leaves the old or the new file, never half of one."""
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".state.{os.getpid()}.tmp")
        data = json.dumps(dataclasses.asdict(state), indent=1, sort_keys=True)
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)

    def lock(self) -> RunLock:
        return RunLock(self.dir)


def _decode(path: Path, text: str) -> State:
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise StateError(f"{path}:{exc.lineno}:{exc.colno}: the state file is corrupt ({exc.msg}); "
                         "move it away to start over") from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("format"), int):
        raise StateError(f"{path}: not a batchflow state file; move it away to start over")
    if raw["format"] > STATE_FORMAT:
        raise StateError(f"{path}: state format {raw['format']} is newer than this batchflow understands "
                         f"({STATE_FORMAT}); upgrade batchflow")
    try:
        shards = [Shard(**{**s, "jobs": [Job(**j) for j in s["jobs"]]}) for s in raw.pop("shards")]
        return State(**raw, shards=shards)
    except (KeyError, TypeError) as exc:
        raise StateError(f"{path}: the state file is corrupt ({exc}); move it away to start over") from exc


class RunLock:
    """One run per spec at a time; the OS releases the lock when its holder dies, so it is never stale."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self._lock = filelock.FileLock(directory / "lock", timeout=0)
        self._info = directory / "lock.json"

    def __enter__(self) -> RunLock:
        self.dir.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire()
        except filelock.Timeout:
            raise LockedError(f"{self.dir}: another run holds the lock ({self._holder()}); "
                              "try again when it ends") from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "user": _user(),
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        self._info.write_text(json.dumps(info), encoding="utf-8")
        return self

    def __exit__(self, *exc: object) -> None:
        self._info.unlink(missing_ok=True)
        self._lock.release()

    def _holder(self) -> str:
        try:
            info = json.loads(self._info.read_text(encoding="utf-8"))
            return f"pid {info['pid']} on {info['host']} since {info['started']}"
        except (OSError, ValueError, KeyError):
            return "holder unknown"


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "?"
