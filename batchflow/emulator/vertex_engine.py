"""The engine of the Vertex `batchPredictionJobs` surface: jobs on disk, a worker, GCS in and out; no HTTP.

It mirrors the Gemini engine (`engine.py`): every job is `data_dir/vertex/ID.json`; a background worker reads a
new job's input from GCS, answers it and writes its prediction files as soon as the job is created; the job is
seen finished once its time has come *and* that work is done (a `get` of a due job waits for it). A restarted
engine on the same directory picks unfinished work up again (the output is deterministic, so rewriting it is
harmless). It shares the owning emulator's fault plan and its creates-by-display-name counter (`Host`).
"""

from __future__ import annotations

import queue
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from batchflow.emulator import vertex_bigquery, vertex_execute, vertex_jobs
from batchflow.emulator.errors import not_found
from batchflow.emulator.faults import FaultPlan
from batchflow.emulator.jobs import LIVE
from batchflow.emulator.store import page_token, parse_page_token
from batchflow.emulator.vertex_jobs import VertexJob

JobFilter = Callable[[VertexJob, str], bool]  # (job, visible state) -> keep


class Host(Protocol):
    """What the Vertex engine uses of the emulator that owns it."""

    faults: FaultPlan

    def count_create(self, display_name: str | None) -> None:
        """Count one created batch under its display name."""


class VertexJobs:
    """The batch prediction jobs of one emulator; thread-safe."""

    def __init__(self, jobs_dir: Path, job_seconds: float, clock: Callable[[], float], host: Host) -> None:
        self.job_seconds = job_seconds
        self._dir = jobs_dir
        self._dir.mkdir(parents=True, exist_ok=True)
        self._clock = clock
        self._host = host
        self._lock = threading.RLock()
        self._jobs = vertex_jobs.load_all(self._dir)
        self._seq = max((j.seq for j in self._jobs.values()), default=0)
        self._compute_locks: dict[str, threading.Lock] = {}
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._worker = threading.Thread(target=self._work, name="emulator-vertex-worker", daemon=True)
        self._worker.start()
        for job in self._jobs.values():
            if job.state == LIVE and not job.computed:
                self._queue.put(job.id)

    def create(self, project: str, location: str, body: Any) -> dict[str, Any]:
        """Create a job from a create body; returns its resource."""
        now = self._clock()
        job = vertex_jobs.parse_create(body, vertex_jobs.new_job_id(), 0, project, location, now, self.job_seconds)
        if not vertex_bigquery.is_bigquery(job.input_config):
            vertex_execute.filesystem()  # refuse the job now, not later, when gcsfs is missing
        with self._lock:
            self._seq += 1
            job.seq = self._seq
            vertex_jobs.save(self._dir, job)
            self._jobs[job.id] = job
        self._host.count_create(job.display_name)
        self._queue.put(job.id)
        return vertex_jobs.resource(job, now)

    def get(self, project: str, location: str, job_id: str) -> dict[str, Any]:
        """A job's resource, finishing it first if its time has come."""
        job = self._job(project, location, job_id)
        self._advance(job, block=True)
        return vertex_jobs.resource(job, self._clock())

    def list(self, project: str, location: str, size: int, token: str | None,
             keep: JobFilter) -> dict[str, Any]:
        """One page of the jobs `keep` accepts, newest first: `{"batchPredictionJobs": [...], "nextPageToken"?}`."""
        after = parse_page_token(token)
        with self._lock:
            ordered = sorted((j for j in self._jobs.values() if (j.project, j.location) == (project, location)),
                             key=lambda j: -j.seq)
        rest = []
        for job in ordered:
            if after is not None and job.seq >= after:
                continue
            self._advance(job, block=False)  # a listing never waits on a computation
            if keep(job, job.visible_state(self._clock())):
                rest.append(job)
                if len(rest) > size:
                    break
        page = rest[:size]
        result: dict[str, Any] = {"batchPredictionJobs": [vertex_jobs.resource(j, self._clock()) for j in page]}
        if len(rest) > size:
            result["nextPageToken"] = page_token(page[-1].seq)
        return result

    def cancel(self, project: str, location: str, job_id: str) -> dict[str, Any]:
        """Cancel a live job; a finished one is left as it is."""
        with self._lock:
            job = self._job(project, location, job_id)
            if job.state == LIVE:
                self._end(job, "CANCELLED")
        return {}

    def delete(self, project: str, location: str, job_id: str) -> dict[str, Any]:
        """Forget a job (its prediction files stay: they belong to the bucket); a finished delete Operation."""
        with self._lock:
            self._job(project, location, job_id)
            del self._jobs[job_id]
            (self._dir / f"{job_id}.json").unlink(missing_ok=True)
        return {"name": f"{vertex_jobs.parent(project, location)}/operations/{vertex_jobs.new_job_id()}",
                "done": True, "response": {"@type": "type.googleapis.com/google.protobuf.Empty"}}

    def close(self) -> None:
        """Stop the worker (unfinished work is picked up again by the next engine on this directory)."""
        self._queue.put(None)
        self._worker.join(timeout=5)

    # -- lifecycle -----------------------------------------------------------------------------------------

    def _advance(self, job: VertexJob, *, block: bool) -> None:
        if job.state != LIVE or self._clock() < job.due_time:
            return
        if not job.computed:
            if not block:
                return
            self._compute(job.id)
        with self._lock:
            if job.state == LIVE and job.computed and self._jobs.get(job.id) is job:
                self._end(job, self._decide_outcome(job))

    def _decide_outcome(self, job: VertexJob) -> str:
        """The one place a due job's final state is chosen: the fault plan first, then the job's own error."""
        forced = self._host.faults.job_outcome(job.id, job.display_name)
        if forced == "STALL":
            return LIVE
        if forced in ("FAILED", "EXPIRED"):
            job.error = {"code": 13 if forced == "FAILED" else 4, "message": f"Batch prediction job {forced.lower()}."}
            return forced
        return "FAILED" if job.error is not None else "SUCCEEDED"

    def _end(self, job: VertexJob, state: str) -> None:
        if state == LIVE:
            return
        now = self._clock()
        job.state, job.end_time, job.update_time = state, now, now
        vertex_jobs.save(self._dir, job)

    def _is_live(self, job: VertexJob) -> bool:
        with self._lock:
            return self._jobs.get(job.id) is job and job.state == LIVE

    def _compute(self, job_id: str) -> None:
        """Read, answer and write a job's lines; a job cancelled or deleted meanwhile writes nothing."""
        with self._lock:
            lock = self._compute_locks.setdefault(job_id, threading.Lock())
        with lock:
            with self._lock:
                job = self._jobs.get(job_id)
                if job is None or job.state != LIVE or job.computed:
                    return
            result = self._run(job)
            with self._lock:
                self._compute_locks.pop(job_id, None)
                if not self._is_live(job):
                    return
                job.computed, job.error = True, result.error
                job.request_count, job.succeeded, job.failed = result.request_count, result.succeeded, result.failed
                vertex_jobs.save(self._dir, job)

    def _run(self, job: VertexJob) -> vertex_execute.JobResult:
        try:
            if vertex_bigquery.is_bigquery(job.input_config):
                return vertex_bigquery.run_job(job.input_config, job.model, job.output_dir, self._clock,
                                               lambda: self._is_live(job))
            return vertex_execute.run_job(job.id, job.model, job.input_uris, job.output_dir, self._dir,
                                          self._clock, lambda: self._is_live(job),
                                          self._host.faults.line_faults(job.id, job.display_name))
        except Exception as exc:  # GCS answering 5xx, or an emulator bug: the job fails visibly, never hangs
            traceback.print_exc(file=sys.stderr)
            return vertex_execute.JobResult(error={"code": 13, "message": f"Internal error: {exc!r}"[:500]})

    def _work(self) -> None:
        while (job_id := self._queue.get()) is not None:
            try:
                self._compute(job_id)
            except Exception as exc:  # a worker that dies silently would leave every later job RUNNING
                print(f"batchflow emulator: computing {job_id} failed: {exc!r}", file=sys.stderr, flush=True)

    def _job(self, project: str, location: str, job_id: str) -> VertexJob:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None or (job.project, job.location) != (project, location):
            raise not_found(f"The BatchPredictionJob {vertex_jobs.parent(project, location)}"
                            f"/batchPredictionJobs/{job_id} does not exist.")
        return job
