"""The engine of the Vertex `batchPredictionJobs` surface: jobs on disk, a worker, GCS in and out; no HTTP.

Its lifecycle is the Gemini engine's (`job_engine.JobEngine`): every job is `data_dir/vertex/ID.json`; a
background worker reads a new job's input from GCS (or BigQuery), answers it and writes its predictions as soon as
the job is created; the job is seen finished once its time has come *and* that work is done (a `get` of a due job
waits for it). A restarted engine on the same directory picks unfinished work up again (the output is
deterministic, so rewriting it is harmless). It shares the owning emulator's fault plan and its
creates-by-display-name counter (`Host`).

A cancel moves a live job to CANCELLING; it ends `Service.cancelling_seconds` later, CANCELLED (or SUCCEEDED when
the plan says so). Predictions the plan defers (late output, a cancel that delivers) wait on local disk and are
uploaded when the job ends, or by a timer `late_seconds` after it; a timer deletes those the plan has go. Only
GCS output is faulted so; BigQuery jobs keep to the plain lifecycle.
"""

from __future__ import annotations

import hashlib
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from batchflow.emulator.faults.plan import FaultPlan
from batchflow.emulator.jobs.records import CANCELLING, LIVE, TERMINAL
from batchflow.emulator.jobs.store import page_token, parse_page_token, save_record
from batchflow.emulator.jobs.worker import HOUR, JobEngine
from batchflow.emulator.model import catalog
from batchflow.emulator.vertex import bigquery as vertex_bigquery
from batchflow.emulator.vertex import execute as vertex_execute
from batchflow.emulator.vertex import jobs as vertex_jobs
from batchflow.emulator.vertex import output as vertex_output
from batchflow.emulator.vertex.jobs import VertexJob
from batchflow.emulator.wire.errors import ApiError, not_found

JobFilter = Callable[[VertexJob, str], bool]  # (job, visible state) -> keep


def service_agent(project: str) -> str:
    """The project's Vertex AI service agent, ``service-NUMBER@gcp-sa-aiplatform.iam.gserviceaccount.com``: the
    emulator knows no project numbers, so a 12-digit one is derived from the project id, the same every time."""
    number = 10**11 + int(hashlib.sha256(project.encode()).hexdigest()[:15], 16) % (9 * 10**11)
    return f"service-{number}@gcp-sa-aiplatform.iam.gserviceaccount.com"


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
        self._timers: list[threading.Timer] = []
        super().__init__(jobs_dir, VertexJob, clock, "emulator-vertex-worker")
        for job in list(self._jobs.values()):
            if job.state in TERMINAL:
                self._schedule_output(job)  # what a restart interrupted

    def create(self, project: str, location: str, body: Any) -> dict[str, Any]:
        """Create a job from a create body; returns its resource."""
        now = self._clock()
        job = vertex_jobs.parse_create(body, vertex_jobs.new_job_id(), 0, project, location, now, self.job_seconds)
        catalog.check_vertex_batch(job.model, project, location, vertex_bigquery.is_bigquery(job.input_config))
        if not vertex_bigquery.is_bigquery(job.input_config):
            vertex_execute.filesystem()  # refuse the job now, not later, when gcsfs is missing
            self._check_access(job)
        self._add(job)
        self._host.count_create(job.display_name)
        self._queue.put(job.id)
        return vertex_jobs.resource(job, now)

    def _check_access(self, job: VertexJob) -> None:
        """A bucket the project's service agent may not read (the plan's ``access.unreadable_buckets``) refuses the
        create, as Vertex does: FAILED_PRECONDITION naming the agent, the permission and the bucket."""
        unreadable = self.faults.service.unreadable_buckets
        for uri in [*job.input_uris, job.output_dir]:
            bucket = uri.removeprefix("gs://").split("/", 1)[0]
            if bucket in unreadable:
                raise ApiError(400, "FAILED_PRECONDITION", (
                    f"Service account `{service_agent(job.project)}` does not have `[storage.objects.get]` IAM "
                    f'permission(s) to the bucket "{bucket}". Please either copy the files to the Google Cloud '
                    "Storage bucket owned by your project, or grant the required IAM permission(s) to the service "
                    "account."))

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
        """Start cancelling a live job (CANCELLING, then CANCELLED or SUCCEEDED); a finished one is left as it is."""
        with self._lock:
            job = self._job(project, location, job_id)
            if job.state == LIVE:
                now = self._clock()
                job.state, job.cancel_time, job.update_time = CANCELLING, now, now
                job.cancel_outcome = self.faults.cancel_outcome(job.id, job.display_name)
                save_record(self._dir, job)
        return {}

    def close(self) -> None:
        """Stop the worker and the output timers (a restart schedules them again)."""
        super().close()
        with self._lock:
            for timer in self._timers:
                timer.cancel()

    def delete(self, project: str, location: str, job_id: str) -> dict[str, Any]:
        """Forget a job (its prediction files stay: they belong to the bucket); a finished delete Operation."""
        with self._lock:
            self._job(project, location, job_id)
            self._discard(self._jobs.pop(job_id))
            (self._dir / f"{job_id}.json").unlink(missing_ok=True)
        return {"name": f"{vertex_jobs.parent(project, location)}/operations/{vertex_jobs.new_job_id()}",
                "done": True, "response": {"@type": "type.googleapis.com/google.protobuf.Empty"}}

    # -- lifecycle -----------------------------------------------------------------------------------------

    def _succeed(self, job: VertexJob) -> str:
        """A job whose input could not be read at all fails (its lines failing one by one do not)."""
        return "FAILED" if job.error is not None else "SUCCEEDED"

    def _mark_faults(self, job: VertexJob) -> None:
        super()._mark_faults(job)
        if vertex_bigquery.is_bigquery(job.input_config):
            job.late_output = job.output_gone = job.cancel_delivers = False

    def _time_limit(self, job: VertexJob) -> tuple[float, str]:
        """A queued (stuck) job expires after 72 h; a running one is cancelled after 24 h, keeping what it wrote."""
        limit = self.faults.service.expire_after
        if job.stuck:
            return job.create_time + (limit or 72 * HOUR), "EXPIRED"
        return job.start_time + (limit or 24 * HOUR), "CANCELLED"

    def _advance(self, job: VertexJob, *, block: bool) -> None:
        if job.state == CANCELLING:
            self._finish_cancel(job, block=block)
        else:
            super()._advance(job, block=block)

    def _finish_cancel(self, job: VertexJob, *, block: bool) -> None:
        """End a CANCELLING job once its time is up: SUCCEEDED if the plan says so, else CANCELLED (with its
        finished predictions if the plan has it deliver them)."""
        assert job.cancel_time is not None
        if self._clock() < job.cancel_time + self.faults.service.cancelling_seconds:
            return
        if not job.computed and (job.cancel_outcome == "SUCCEEDED" or job.cancel_delivers):
            if not block:
                return
            self._compute(job.id)
        with self._lock:
            if job.state != CANCELLING or self._jobs.get(job.id) is not job:
                return
            if job.cancel_outcome == "SUCCEEDED" and job.computed:
                self._end(job, self._succeed(job))
                return
            if job.cancel_delivers and job.computed:
                self._keep_finished(job, self._progress(job, job.cancel_time))
            self._end(job, "CANCELLED")

    def _keep_finished(self, job: VertexJob, progress: float) -> None:
        """Cut the deferred predictions down to the lines finished by then; undeferred ones were all written."""
        if not job.deferred:
            job.partial = job.computed
            return
        finished = lambda key: self.faults.finished(job.id, job.display_name, key, progress)  # noqa: E731
        ok, failed = vertex_output.keep_finished(vertex_output.kept_parts(self._dir, job.id), finished)
        job.succeeded, job.failed, job.partial = ok, failed, ok + failed > 0

    def _ended(self, job: VertexJob) -> None:
        if not job.has_output:
            self._discard(job)
        self._schedule_output(job)

    def _schedule_output(self, job: VertexJob) -> None:
        """Publish deferred predictions (now, or by a timer when late) and delete those the plan has go."""
        parts = vertex_output.kept_parts(self._dir, job.id) if job.has_output else []
        if parts and job.output_at is None:
            vertex_output.publish(parts, job.output_dir)  # before anyone sees the job ended
        elif parts:
            self._at(job.output_at, lambda: vertex_output.publish(parts, job.output_dir))
        if job.gone_at is not None:
            self._at(job.gone_at, lambda: vertex_output.remove_output(job.output_dir))

    def _at(self, when: float | None, action: Callable[[], None]) -> None:
        def run() -> None:
            try:
                action()
            except Exception:  # a timer thread that dies silently would leave the output as it was
                traceback.print_exc(file=sys.stderr)

        timer = threading.Timer(max(0.0, (when or 0.0) - self._clock()), run)
        timer.daemon = True
        with self._lock:
            self._timers.append(timer)
        timer.start()

    def _discard(self, job: VertexJob) -> None:
        for part in vertex_output.kept_parts(self._dir, job.id):
            part.unlink(missing_ok=True)

    def _uploads(self, job: VertexJob) -> bool:
        """Whether the worker may write a job's predictions: it is live, or CANCELLING towards SUCCEEDED."""
        with self._lock:
            return self._jobs.get(job.id) is job and (
                job.state == LIVE or (job.state == CANCELLING and job.cancel_outcome == "SUCCEEDED"))

    def _run(self, job: VertexJob) -> vertex_execute.JobResult:
        try:
            if vertex_bigquery.is_bigquery(job.input_config):
                rows = self.faults.line_faults(job.id, job.display_name, vertex_execute.kind_of(job.model))
                return vertex_bigquery.run_job(job.input_config, job.model, job.output_dir, self._clock,
                                               lambda: self._uploads(job), rows, job.model_parameters or {})
            service = self.faults.service
            output = vertex_execute.Output(job.deferred, service.reserialise_echo, service.drop_labels)
            faults = self.faults.line_faults(job.id, job.display_name, vertex_execute.kind_of(job.model))
            return vertex_execute.run_job(job.id, job.model, job.input_uris, job.output_dir, self._dir, self._clock,
                                          lambda: self._uploads(job) or (job.deferred and self._is_live(job)),
                                          faults, job.model_parameters or {}, output)
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
