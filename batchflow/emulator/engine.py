"""The emulator's engine: batch jobs and files on disk, with no HTTP in sight.

Every job lives in `data_dir/jobs/ID.json` (+ its own copy of the input lines and, once computed, its output),
so a restarted engine on the same directory knows every job and file. Results are computed by a background
worker as soon as a job is created; a job becomes visible as finished when its time has come *and* its
results are ready (a `get` of a due job waits for them), so `job_seconds=0` means "as soon as possible".
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from batchflow.emulator import jobs
from batchflow.emulator.errors import not_found
from batchflow.emulator.execute import LineCounts, count_requests, run_lines
from batchflow.emulator.faults import FaultPlan, NoFaults
from batchflow.emulator.files import FileStore
from batchflow.emulator.job_engine import JobEngine
from batchflow.emulator.jobs import LIVE, JobRecord
from batchflow.emulator.store import new_id, page_token, parse_page_token, read_json, write_json_atomic
from batchflow.emulator.submit import parse_create
from batchflow.emulator.vertex_engine import VertexJobs

OUTPUT_MIME_TYPE = "application/jsonl"
_STATS_FILE = "stats.json"


class Emulator(JobEngine[JobRecord, LineCounts]):
    """Jobs, files and counters of one emulator; thread-safe."""

    def __init__(self, data_dir: Path, job_seconds: float = 0.0, *, clock: Callable[[], float] = time.time,
                 faults: FaultPlan | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.job_seconds = job_seconds
        self.faults = faults or NoFaults()
        self.files = FileStore(self.data_dir, clock)
        self._creates: Counter[str] = Counter(self._load_stats().get("creates_by_display_name", {}))
        self._calls: Counter[str] = Counter()
        super().__init__(self.data_dir / "jobs", JobRecord, clock, "emulator-worker")
        self.vertex = VertexJobs(self.data_dir / "vertex", job_seconds, clock, self)  # Vertex batchPredictionJobs

    # -- batches -------------------------------------------------------------------------------------------

    def create_batch(self, kind: str, model: str, body: Any) -> dict[str, Any]:
        """Create a generate or embed batch from a create body; returns its resource."""
        submission = parse_create(kind, body, self.files)
        job_id = new_id()
        submission.write_input(self.files, self._path(job_id, "input.jsonl"))
        request_count = count_requests(self._path(job_id, "input.jsonl"))  # outside the lock: may be large
        now = self._clock()
        job = JobRecord(id=job_id, seq=0, kind=kind, model=f"models/{model.removeprefix('models/')}",
                        display_name=submission.display_name, input_file=submission.file_id,
                        request_count=request_count, create_time=now, due_time=now + self.job_seconds,
                        update_time=now)
        with self._lock:
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
        """Cancel a live batch (no output is kept); a finished one is left as it is."""
        with self._lock:
            job = self._job(job_id)
            if job.state == LIVE:
                self._end(job, "CANCELLED")
                self._path(job_id, "output.jsonl").unlink(missing_ok=True)
        return {}

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

    def _succeed(self, job: JobRecord) -> str:
        """A file job's output becomes a file resource (an inline job's is rendered from disk)."""
        if job.input_file is not None:
            output_id = f"batch-{job.id}"
            if not self.files.exists(output_id):
                self.files.add_generated(output_id, self._path(job.id, "output.jsonl"), OUTPUT_MIME_TYPE,
                                         display_name=output_id)
            job.output_file = output_id
        return "SUCCEEDED"

    def _run(self, job: JobRecord) -> LineCounts | None:
        """Answer a job's lines into a temporary output file."""
        try:
            return run_lines(job.kind, job.model, self._path(job.id, "input.jsonl"), self._path(job.id, "output.tmp"),
                             self.faults.line_faults(job.id, job.display_name))
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
        inline = None
        if job.state == "SUCCEEDED" and job.input_file is None:
            inline = _read_lines(self._path(job.id, "output.jsonl"))
        return jobs.resource(job, self._clock(), inline)

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
