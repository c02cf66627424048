"""What the Gemini and the Vertex job engines share: a table of jobs on disk and the worker that computes them.

Every job is `jobs_dir/ID.json`. A background worker does a job's work (`_run`) once the job would be RUNNING
(`start_time`: a quarter of the way to its due time), outside the lock — not at once, so that answering a burst of
creates and uploads does not wait on the work of the jobs just created (the service's jobs do not run on the
client's cores); a job is seen finished once its time has come *and* that work is done (a blocking `_advance`, a
`get`, does it then if the worker has not). A restarted engine on the same directory queues its unfinished jobs
again. Only the final state is written, once, and the fault plan may force it (`_decide_outcome`).

The plan also decides, when a job is created, whether it is stuck (PENDING, never due), whether its output comes
late or goes away, and whether a cancel still delivers its finished lines; those decisions are kept on the record.
A job that never ends on its own (stuck, or stalled by the plan) ends at the service's time limit (`_time_limit`).
"""

from __future__ import annotations

import queue
import sys
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from batchflow.emulator.faults.plan import FaultPlan
from batchflow.emulator.jobs.records import ALIVE, LIVE, start_time
from batchflow.emulator.jobs.store import Record, load_records, save_record


class Job(Record, Protocol):
    """What the engine reads and writes of a job record (`records.JobRecord`, `vertex.jobs.VertexJob`)."""

    seq: int
    state: str
    computed: bool
    create_time: float
    due_time: float
    update_time: float
    end_time: float | None
    error: dict[str, Any] | None
    stuck: bool
    late_output: bool
    output_gone: bool
    cancel_delivers: bool
    partial: bool
    output_at: float | None
    gone_at: float | None

    @property
    def display_name(self) -> str | None:
        """The name the fault plan matches."""

    @property
    def has_output(self) -> bool:
        """Whether the job ended with answers."""


J = TypeVar("J", bound=Job)
Result = TypeVar("Result")
HOUR = 3600.0
_STALLED_PROGRESS = 0.5  # the share of its lines a job held past its due time (stalled) has finished


class JobEngine(ABC, Generic[J, Result]):
    """Jobs of one kind, persisted and worked in the background; thread-safe. Subclasses set `faults` first."""

    faults: FaultPlan
    failed_noun = "Batch"  # "<noun> failed." / "<noun> expired." when the fault plan forces the outcome

    def __init__(self, jobs_dir: Path, make: Callable[..., J], clock: Callable[[], float], worker_name: str) -> None:
        self._dir = jobs_dir
        self._dir.mkdir(parents=True, exist_ok=True)
        self._clock = clock
        self._lock = threading.RLock()
        self._jobs: dict[str, J] = load_records(self._dir, make)
        self._seq = max((j.seq for j in self._jobs.values()), default=0)
        self._compute_locks: dict[str, threading.Lock] = {}
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._closing = threading.Event()
        self._worker = threading.Thread(target=self._work, name=worker_name, daemon=True)
        self._worker.start()
        for job in self._jobs.values():
            if job.state in ALIVE and not job.computed:
                self._queue.put(job.id)

    def close(self) -> None:
        """Stop the worker (unfinished work is picked up again by the next engine on this directory)."""
        self._closing.set()
        self._queue.put(None)
        self._worker.join(timeout=5)

    # -- what an engine does with its own jobs -------------------------------------------------------------

    @abstractmethod
    def _run(self, job: J) -> Result | None:
        """A job's work, done outside the lock; None when there is nothing to keep."""

    @abstractmethod
    def _keep(self, job: J, result: Result) -> None:
        """Record `result` on a job still live (under the lock; the engine then marks it computed and saves it)."""

    def _discard(self, job: J) -> None:
        """Throw away what `_run` left behind for a job cancelled or deleted meanwhile (or that kept nothing)."""

    def _succeed(self, job: J) -> str:
        """The final state of a due, computed job the fault plan leaves alone."""
        return "SUCCEEDED"

    def _time_limit(self, job: J) -> tuple[float, str]:
        """When a job that does not end on its own (stuck or stalled) is ended, and how. Gemini: EXPIRED 48 h after
        its creation, with nothing returned."""
        return job.create_time + (self.faults.service.expire_after or 48 * HOUR), "EXPIRED"

    def _keep_finished(self, job: J, progress: float) -> None:
        """Cut a cancelled job's computed output down to the lines finished by then (`progress`, 0..1), marking
        it `partial` when any are left (under the lock)."""

    def _ended(self, job: J) -> None:
        """What follows a job's end (under the lock, the record saved): e.g. making its output readable."""

    # -- lifecycle -----------------------------------------------------------------------------------------

    def _add(self, job: J) -> None:
        """Number, save and register a new job (the caller queues it once the lock is let go)."""
        with self._lock:
            self._seq += 1
            job.seq = self._seq
            self._mark_faults(job)
            save_record(self._dir, job)
            self._jobs[job.id] = job

    def _mark_faults(self, job: J) -> None:
        """Keep on a new job what the fault plan decides at its creation."""
        found = self.faults.job_faults(job.id, job.display_name)
        job.stuck, job.late_output = found.stuck, found.late_output
        job.output_gone, job.cancel_delivers = found.output_gone, found.cancel_delivers

    def _advance(self, job: J, *, block: bool) -> None:
        if job.state != LIVE:
            return
        if job.stuck:
            self._end_if_over_time(job)
            return
        if self._clock() < job.due_time:
            return
        if not job.computed:
            if not block:
                return
            self._compute(job.id)
        with self._lock:
            if job.state == LIVE and job.computed and self._jobs.get(job.id) is job:
                outcome = self._decide_outcome(job)
                if outcome == LIVE:  # stalled
                    self._end_if_over_time(job)
                else:
                    self._end(job, outcome)

    def _end_if_over_time(self, job: J) -> None:
        deadline, state = self._time_limit(job)
        with self._lock:
            if self._clock() < deadline or not self._is_live(job):
                return
            job.error = {"code": 4 if state == "EXPIRED" else 1,
                         "message": f"{self.failed_noun} {state.lower()}: it did not finish in time."}
            self.faults.note(f"job_time_limit_{state.lower()}")
            if state == "CANCELLED" and job.computed:
                self._keep_finished(job, self._progress(job, self._clock()))
            self._end(job, state)

    def _progress(self, job: J, at: float) -> float:
        """How far a live job had got at `at` (0..1): nothing while PENDING, then in proportion to its time."""
        start = start_time(job.create_time, job.due_time)
        if job.stuck or at < start or at <= job.create_time:
            return 0.0
        if at >= job.due_time:
            return _STALLED_PROGRESS
        return (at - start) / (job.due_time - start)

    def _decide_outcome(self, job: J) -> str:
        """The one place a due job's final state is chosen: the fault plan first (FAILED, EXPIRED, or STALL)."""
        forced = self.faults.job_outcome(job.id, job.display_name)
        if forced == "STALL":
            return LIVE
        if forced in ("FAILED", "EXPIRED"):
            job.error = {"code": 13 if forced == "FAILED" else 4, "message": f"{self.failed_noun} {forced.lower()}."}
            return forced
        return self._succeed(job)

    def _end(self, job: J, state: str) -> None:
        if state == LIVE:
            return
        now = self._clock()
        job.state, job.end_time, job.update_time = state, now, now
        if job.has_output:
            service = self.faults.service
            if job.late_output:
                job.output_at = now + service.late_seconds
            if job.output_gone:
                job.gone_at = (job.output_at or now) + service.retention
        save_record(self._dir, job)
        self._ended(job)

    def _is_live(self, job: J) -> bool:
        with self._lock:
            return self._jobs.get(job.id) is job and job.state in ALIVE

    def _until_running(self, job_id: str) -> bool:
        """Wait until the job would be RUNNING (on the engine's clock, looked at every 50 ms); False if closing."""
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            return True
        starts = start_time(job.create_time, job.due_time)
        while self._clock() < starts and not job.computed:
            if self._closing.wait(min(0.05, max(0.0, starts - self._clock()))):
                return False
        return True

    def _compute(self, job_id: str) -> None:
        """Do a job's work once; a job cancelled or deleted meanwhile keeps nothing."""
        with self._lock:
            lock = self._compute_locks.setdefault(job_id, threading.Lock())
        with lock:
            with self._lock:
                job = self._jobs.get(job_id)
                if job is None or job.state not in ALIVE or job.computed:
                    return
            result = self._run(job)
            with self._lock:
                self._compute_locks.pop(job_id, None)
                if result is None or not self._is_live(job):
                    self._discard(job)
                    return
                self._keep(job, result)
                job.computed = True
                save_record(self._dir, job)

    def _work(self) -> None:
        while (job_id := self._queue.get()) is not None:
            if not self._until_running(job_id):
                return
            try:
                self._compute(job_id)
            except Exception as exc:  # a worker that dies silently would leave every later job RUNNING
                print(f"batchflow emulator: computing {job_id} failed: {exc!r}", file=sys.stderr, flush=True)
