"""The emulator's engine: batch jobs and files on disk, with no HTTP in sight.

Every job lives in `data_dir/jobs/ID.json` (+ its own copy of the input lines and, once computed, its output),
so a restarted engine on the same directory knows every job and file. Results are computed by a background
worker as soon as a job is created; a job becomes visible as finished when its time has come *and* its
results are ready (a `get` of a due job waits for them), so `job_seconds=0` means "as soon as possible".

A finished job's output is made readable, and deleted, lazily: whenever the job or its output file is looked at
(`_settle`), as the fault plan's `late_output` / `output_gone` times say. Creates are refused with 429 beyond the
plan's `quota` (enqueued tokens per model, concurrent batches), counted over live jobs.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from batchflow.emulator.faults.plan import FaultPlan, NoFaults
from batchflow.emulator.gemini.execute import LineCounts, count_requests, identity, run_lines
from batchflow.emulator.gemini.files import FileStore
from batchflow.emulator.gemini.submit import parse_create
from batchflow.emulator.jobs import records as jobs
from batchflow.emulator.jobs.records import LIVE, JobRecord, output_visible
from batchflow.emulator.jobs.store import (
    new_id,
    page_token,
    parse_page_token,
    read_json,
    save_record,
    write_json_atomic,
)
from batchflow.emulator.jobs.worker import JobEngine
from batchflow.emulator.model import media
from batchflow.emulator.model.deterministic import byte_tokens
from batchflow.emulator.vertex.engine import VertexJobs
from batchflow.emulator.wire.errors import ApiError, not_found

OUTPUT_MIME_TYPE = "application/jsonl"
_STATS_FILE = "stats.json"


class Emulator(JobEngine[JobRecord, LineCounts]):
    """Jobs, files and counters of one emulator; thread-safe."""

    def __init__(self, data_dir: Path, job_seconds: float = 0.0, *, clock: Callable[[], float] = time.time,
                 faults: FaultPlan | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.job_seconds = job_seconds
        self.faults = faults or NoFaults()
        self.files = FileStore(self.data_dir, clock, self.faults.service.file_storage_bytes, self.faults.note)
        self._media = media.reader(self.files.media)  # what a line's file_data parts read: files/ID and gs://
        self._creates: Counter[str] = Counter(self._load_stats().get("creates_by_display_name", {}))
        self._calls: Counter[str] = Counter()
        super().__init__(self.data_dir / "jobs", JobRecord, clock, "emulator-worker")
        self.vertex = VertexJobs(self.data_dir / "vertex", job_seconds, clock, self)  # Vertex batchPredictionJobs

    # -- batches -------------------------------------------------------------------------------------------

    def create_batch(self, kind: str, model: str, body: Any) -> dict[str, Any]:
        """Create a generate or embed batch from a create body; returns its resource."""
        submission = parse_create(kind, body, self.files)
        job_id = new_id()
        source = self._path(job_id, "input.jsonl")
        submission.write_input(self.files, source)
        request_count = submission.lines(self.files)
        if request_count is None:
            request_count = count_requests(source)  # outside the lock: may be large
        now = self._clock()
        job = JobRecord(id=job_id, seq=0, kind=kind, model=f"models/{model.removeprefix('models/')}",
                        display_name=submission.display_name, input_file=submission.file_id,
                        request_count=request_count, create_time=now, due_time=now + self.job_seconds,
                        update_time=now, input_tokens=byte_tokens(source.stat().st_size))
        with self._lock:
            try:
                self._check_quota(job)
            except ApiError:
                source.unlink(missing_ok=True)
                raise
            self._add(job)
            self.count_create(submission.display_name)
        self._queue.put(job_id)
        return jobs.resource(job, now, None)

    def get_batch(self, job_id: str) -> dict[str, Any]:
        """A batch's resource, finishing it first if its time has come."""
        self._advance(self._job(job_id), block=True)
        return self._render(self._job(job_id))

    def list_batches(self, size: int, token: str | None) -> dict[str, Any]:
        """One page of batches, newest first: `{"operations"?: [...], "nextPageToken"?}` (no batch, no key)."""
        after = parse_page_token(token)
        with self._lock:
            ordered = sorted(self._jobs.values(), key=lambda j: -j.seq)
        rest = [j for j in ordered if after is None or j.seq < after]
        page = rest[:size]
        for job in page:
            self._advance(job, block=False)  # a listing never waits on a computation
        result: dict[str, Any] = {"operations": [self._render(j) for j in page]} if page else {}
        if len(rest) > size:
            result["nextPageToken"] = page_token(page[-1].seq)
        return result

    def cancel_batch(self, job_id: str) -> dict[str, Any]:
        """Cancel a live batch: no output is kept, unless the plan has it deliver the lines finished by now; a
        finished batch is left as it is."""
        job = self._job(job_id)
        now = self._clock()
        if job.cancel_delivers and job.state == LIVE:
            self._compute(job_id)  # the finished lines are taken from the computed output
        with self._lock:
            job = self._job(job_id)
            if job.state == LIVE:
                if job.cancel_delivers and job.computed:
                    self._keep_finished(job, self._progress(job, now))
                if not job.partial:
                    self._path(job_id, "output.jsonl").unlink(missing_ok=True)
                self._end(job, "CANCELLED")
        return {}

    def settle_file(self, file_id: str) -> None:
        """Make a batch's output file readable, or delete it, as its times say (before the file is looked at)."""
        with self._lock:
            job = self._jobs.get(file_id.removeprefix("batch-")) if file_id.startswith("batch-") else None
            if job is not None:
                self._settle(job)

    def settle_files(self) -> None:
        """`settle_file` for every batch (before files are listed)."""
        with self._lock:
            for job in self._jobs.values():
                self._settle(job)

    def delete_batch(self, job_id: str) -> dict[str, Any]:
        """Forget a batch; its output file, if any, stays a file resource (the Files API owns it)."""
        with self._lock:
            self._job(job_id)
            del self._jobs[job_id]
            for suffix in ("json", "input.jsonl", "output.jsonl"):
                self._path(job_id, suffix).unlink(missing_ok=True)
        return {}

    def stats(self) -> dict[str, Any]:
        """Counters for tests and harnesses: creates per display name, calls per endpoint, faults injected."""
        with self._lock:
            return {"creates_by_display_name": dict(self._creates), "calls_by_endpoint": dict(self._calls),
                    "jobs": len(self._jobs), "faults": self.faults.counters()}

    def count_create(self, display_name: str | None) -> None:
        """Count one created batch under its display name (the Gemini and Vertex surfaces share the counter)."""
        with self._lock:
            self._creates[display_name or ""] += 1
            write_json_atomic(self.data_dir / _STATS_FILE, {"creates_by_display_name": dict(self._creates)})

    def record_call(self, endpoint: str) -> None:
        """Count one call of an endpoint (the HTTP facade calls this once per request)."""
        with self._lock:
            self._calls[endpoint] += 1

    def close(self) -> None:
        """Stop the workers (jobs in flight are picked up again by the next engine on this directory)."""
        super().close()
        self.vertex.close()

    # -- lifecycle -----------------------------------------------------------------------------------------

    def _ended(self, job: JobRecord) -> None:
        """A file job's output is named now, and becomes a file resource once it is readable (`_settle`)."""
        if job.has_output and job.input_file is not None:
            job.output_file = f"batch-{job.id}"
            save_record(self._dir, job)
        self._settle(job)

    def _settle(self, job: JobRecord) -> None:
        """Register a file job's output once it is readable; delete it once it is gone (under the lock)."""
        if job.output_file is None:
            return
        readable = output_visible(job.output_at, job.gone_at, self._clock())
        exists = self.files.exists(job.output_file)
        source = self._path(job.id, "output.jsonl")
        if readable and not exists and source.exists():
            self.files.add_generated(job.output_file, source, OUTPUT_MIME_TYPE, display_name=job.output_file)
        elif exists and job.gone_at is not None and not readable:
            self.files.delete(job.output_file)

    def _keep_finished(self, job: JobRecord, progress: float) -> None:
        """Cut a cancelled job's computed output down to the lines finished by then (`progress`, 0..1)."""
        path, kept = self._path(job.id, "output.jsonl"), self._path(job.id, "finished.tmp")
        ok = failed = 0
        with open(path, "rb") as src, open(kept, "wb") as out:
            for n, raw in enumerate(src):
                line = orjson.loads(raw)
                if self.faults.finished(job.id, job.display_name, identity(line, n), progress):
                    out.write(raw)
                    ok, failed = ok + ("error" not in line), failed + ("error" in line)
        os.replace(kept, path)
        job.succeeded, job.failed, job.partial = ok, failed, ok + failed > 0

    def _check_quota(self, job: JobRecord) -> None:
        """429 RESOURCE_EXHAUSTED, as the service answers, when the job would pass the plan's quota."""
        service = self.faults.service
        if service.concurrent_batches is None and service.enqueued_tokens is None:
            return
        for earlier in list(self._jobs.values()):
            self._advance(earlier, block=False)  # a job whose time came is no longer live
        live = [j for j in self._jobs.values() if j.state == LIVE]
        if service.concurrent_batches is not None and len(live) >= service.concurrent_batches:
            self.faults.note("quota_concurrent_batches")
            raise ApiError(429, "RESOURCE_EXHAUSTED", f"You've exceeded the limit of {service.concurrent_batches} "
                           "concurrent batches. You exceeded your current quota, please check your plan and "
                           "billing details.")
        enqueued = sum(j.input_tokens for j in live if j.model == job.model)
        if service.enqueued_tokens is not None and enqueued + job.input_tokens > service.enqueued_tokens:
            self.faults.note("quota_enqueued_tokens")
            raise ApiError(429, "RESOURCE_EXHAUSTED", f"You've exceeded the enqueued token limit for "
                           f"{job.model}: {enqueued} tokens are enqueued and this batch adds {job.input_tokens}, "
                           f"over the limit of {service.enqueued_tokens}. You exceeded your current quota, please "
                           "check your plan and billing details.")

    def _run(self, job: JobRecord) -> LineCounts | None:
        """Answer a job's lines into a temporary output file."""
        try:
            return run_lines(job.kind, job.model, self._path(job.id, "input.jsonl"), self._path(job.id, "output.tmp"),
                             self.faults.line_faults(job.id, job.display_name, job.kind), self._media)
        except FileNotFoundError:  # deleted meanwhile: its input went with it
            return None

    def _keep(self, job: JobRecord, result: LineCounts) -> None:
        os.replace(self._path(job.id, "output.tmp"), self._path(job.id, "output.jsonl"))
        job.succeeded, job.failed = result.succeeded, result.failed

    def _discard(self, job: JobRecord) -> None:
        self._path(job.id, "output.tmp").unlink(missing_ok=True)

    # -- helpers -------------------------------------------------------------------------------------------

    def _job(self, job_id: str) -> JobRecord:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise not_found(f"Batch batches/{job_id} not found.")
        return job

    def _render(self, job: JobRecord) -> dict[str, Any]:
        now = self._clock()
        inline = None
        if job.has_output and job.input_file is None and output_visible(job.output_at, job.gone_at, now):
            inline = _read_lines(self._path(job.id, "output.jsonl"))
        with self._lock:
            self._settle(job)
        return jobs.resource(job, now, inline)

    def _path(self, job_id: str, suffix: str) -> Path:
        return self._dir / f"{job_id}.{suffix}"

    def _load_stats(self) -> dict[str, Any]:
        path = self.data_dir / _STATS_FILE
        stats = read_json(path) if path.exists() else {}
        return stats if isinstance(stats, dict) else {}


def _read_lines(path: Path) -> list[dict[str, Any]]:
    try:
        with open(path, "rb") as f:
            return [orjson.loads(raw) for raw in f if raw.strip()]
    except FileNotFoundError:  # the job was deleted while it was being rendered
        return []
