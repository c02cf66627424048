"""The engine of the Vertex `batchPredictionJobs` surface: jobs on disk, a worker, GCS in and out; no HTTP.

Its lifecycle is the Gemini engine's (`job_engine.JobEngine`): every job is `data_dir/vertex/ID.json`; a
background worker reads a new job's input from GCS (or BigQuery), answers it and writes its predictions as soon as
the job is created; the job is seen finished once its time has come *and* that work is done (a `get` of a due job
waits for it). A restarted engine on the same directory picks unfinished work up again (the output is
deterministic, so rewriting it is harmless). It shares the owning emulator's fault plan and its
creates-by-display-name counter (`Host`).
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from batchflow.emulator import catalog, vertex_bigquery, vertex_execute, vertex_jobs
from batchflow.emulator.errors import not_found
from batchflow.emulator.faults import FaultPlan
from batchflow.emulator.job_engine import JobEngine
from batchflow.emulator.jobs import LIVE
from batchflow.emulator.store import page_token, parse_page_token
from batchflow.emulator.vertex_jobs import VertexJob

JobFilter = Callable[[VertexJob, str], bool]  # (job, visible state) -> keep


class Host(Protocol):
    """What the Vertex engine uses of the emulator that owns it."""

    faults: FaultPlan

    def count_create(self, display_name: str | None) -> None:
        """Count one created batch under its display name."""


class VertexJobs(JobEngine[VertexJob, vertex_execute.JobResult]):
    """The batch prediction jobs of one emulator; thread-safe."""

    failed_noun = "Batch prediction job"

    def __init__(self, jobs_dir: Path, job_seconds: float, clock: Callable[[], float], host: Host) -> None:
        self.job_seconds = job_seconds
        self.faults = host.faults
        self._host = host
        super().__init__(jobs_dir, VertexJob, clock, "emulator-vertex-worker")

    def create(self, project: str, location: str, body: Any) -> dict[str, Any]:
        """Create a job from a create body; returns its resource."""
        now = self._clock()
        job = vertex_jobs.parse_create(body, vertex_jobs.new_job_id(), 0, project, location, now, self.job_seconds)
        catalog.check_vertex_batch(job.model, project, location)
        if not vertex_bigquery.is_bigquery(job.input_config):
            vertex_execute.filesystem()  # refuse the job now, not later, when gcsfs is missing
        self._add(job)
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
        """One page of the jobs `keep` accepts, newest first: `{"batchPredictionJobs"?: [...], "nextPageToken"?}`
        (proto3 JSON omits an empty repeated field: no job, no key)."""
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
        result: dict[str, Any] = {"batchPredictionJobs": [vertex_jobs.resource(j, self._clock()) for j in page]} \
            if page else {}
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

    # -- lifecycle -----------------------------------------------------------------------------------------

    def _succeed(self, job: VertexJob) -> str:
        """A job whose input could not be read at all fails (its lines failing one by one do not)."""
        return "FAILED" if job.error is not None else "SUCCEEDED"

    def _run(self, job: VertexJob) -> vertex_execute.JobResult:
        try:
            if vertex_bigquery.is_bigquery(job.input_config):
                return vertex_bigquery.run_job(job.input_config, job.model, job.output_dir, self._clock,
                                               lambda: self._is_live(job))
            return vertex_execute.run_job(job.id, job.model, job.input_uris, job.output_dir, self._dir,
                                          self._clock, lambda: self._is_live(job),
                                          self.faults.line_faults(job.id, job.display_name),
                                          job.model_parameters or {})
        except Exception as exc:  # GCS answering 5xx, or an emulator bug: the job fails visibly, never hangs
            traceback.print_exc(file=sys.stderr)
            return vertex_execute.JobResult(error={"code": 13, "message": f"Internal error: {exc!r}"[:500]})

    def _keep(self, job: VertexJob, result: vertex_execute.JobResult) -> None:
        job.error = result.error
        job.request_count, job.succeeded, job.failed = result.request_count, result.succeeded, result.failed

    def _job(self, project: str, location: str, job_id: str) -> VertexJob:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None or (job.project, job.location) != (project, location):
            raise not_found(f"The BatchPredictionJob {vertex_jobs.parent(project, location)}"
                            f"/batchPredictionJobs/{job_id} does not exist.")
        return job
