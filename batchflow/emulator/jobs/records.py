"""Batch job records: one JSON file per job under `jobs/`, and the Operation-shaped resource they render to.

A live job's state is not stored: it follows from the clock (PENDING for the first quarter of its time, then
RUNNING; always PENDING for a job the fault plan made `stuck`), so a job whose time came while the emulator was
down is simply due when next looked at. Only the final state is written, once, by the engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from batchflow.emulator.jobs.store import rfc3339

LIVE = "LIVE"
CANCELLING = "CANCELLING"  # Vertex only: cancelled, not yet ended
ALIVE = frozenset({LIVE, CANCELLING})  # a job whose work may still be kept
TERMINAL = frozenset({"SUCCEEDED", "FAILED", "CANCELLED", "EXPIRED"})
_PENDING_SHARE = 0.25
_TYPE_PREFIX = "type.googleapis.com/google.ai.generativelanguage.v1main."
_BATCH_TYPES = {"generate": "GenerateContentBatch", "embed": "EmbedContentBatch"}


@dataclass
class JobRecord:
    """Everything the emulator knows about one batch; `seq` orders listings and page tokens."""

    id: str
    seq: int
    kind: str  # generate | embed
    model: str  # models/...
    display_name: str | None
    input_file: str | None  # a file id, or None for inline requests
    request_count: int
    create_time: float
    due_time: float
    state: str = LIVE
    update_time: float = 0.0
    end_time: float | None = None
    computed: bool = False  # the output lines are ready in jobs/ID.output.jsonl
    succeeded: int = 0
    failed: int = 0
    output_file: str | None = None
    error: dict[str, Any] | None = field(default=None)
    input_tokens: int = 0  # the input's token estimate, counted against `quota.enqueued_tokens`
    # what the fault plan decided at creation (faults.JobFaults), and what followed from it
    stuck: bool = False
    late_output: bool = False
    output_gone: bool = False
    cancel_delivers: bool = False
    partial: bool = False  # cancelled, with the lines it had finished
    output_at: float | None = None  # the output can be read from then on (None: from the end)
    gone_at: float | None = None  # the output is deleted then (None: kept)

    @property
    def name(self) -> str:
        """The resource name, `batches/ID`."""
        return f"batches/{self.id}"

    @property
    def has_output(self) -> bool:
        """Whether the job ended with answers: SUCCEEDED, or CANCELLED with those it had finished."""
        return self.state == "SUCCEEDED" or self.partial

    def visible_state(self, now: float) -> str:
        """The state a client sees now (without the BATCH_STATE_ prefix)."""
        if self.state != LIVE:
            return self.state
        return "PENDING" if self.stuck else live_state(self.create_time, self.due_time, now)


def output_visible(output_at: float | None, gone_at: float | None, now: float) -> bool:
    """Whether a finished job's output can be read now: from `output_at` on, before `gone_at` (Gemini or Vertex)."""
    return (output_at is None or now >= output_at) and (gone_at is None or now < gone_at)


def start_time(create_time: float, due_time: float) -> float:
    """When a live job turns from PENDING to RUNNING: a quarter of the way to its due time."""
    return create_time + (due_time - create_time) * _PENDING_SHARE


def live_state(create_time: float, due_time: float, now: float) -> str:
    """PENDING or RUNNING: what a live job (Gemini or Vertex) looks like now."""
    # a job is PENDING at least when it is created, even when it may finish at once (job_seconds=0)
    return "PENDING" if now < start_time(create_time, due_time) or now <= create_time else "RUNNING"


def resource(job: JobRecord, now: float, inline: list[dict[str, Any]] | None) -> dict[str, Any]:
    """The Operation-shaped batch resource; `inline` is the inline output once a job has it."""
    state = job.visible_state(now)
    metadata: dict[str, Any] = {
        "@type": _TYPE_PREFIX + _BATCH_TYPES[job.kind],
        "model": job.model, "name": job.name, "state": f"BATCH_STATE_{state}",
        "createTime": rfc3339(job.create_time), "updateTime": rfc3339(job.update_time or job.create_time),
        "batchStats": _stats(job, state),
    }
    if job.display_name is not None:
        metadata["displayName"] = job.display_name
    if job.end_time is not None:
        metadata["endTime"] = rfc3339(job.end_time)
    op: dict[str, Any] = {"name": job.name, "metadata": metadata, "done": state in TERMINAL}
    output = _output(job, inline)
    if output is not None:
        metadata["output"] = output
        op["response"] = {"@type": _TYPE_PREFIX + _BATCH_TYPES[job.kind] + "Output", **output}
    if job.error is not None:
        op["error"] = job.error
    return op


def _output(job: JobRecord, inline: list[dict[str, Any]] | None) -> dict[str, Any] | None:
    """The file an output is in (named even when it cannot be read yet, or any more), or the inline answers
    (None when they cannot be read now)."""
    if not job.has_output:
        return None
    if job.output_file is not None:
        return {"responsesFile": f"files/{job.output_file}"}
    return None if inline is None else {"inlinedResponses": {"inlinedResponses": inline}}


def _stats(job: JobRecord, state: str) -> dict[str, str]:
    done = job.has_output
    return {"requestCount": str(job.request_count),
            "successfulRequestCount": str(job.succeeded if done else 0),
            "failedRequestCount": str(job.failed if done else 0),
            "pendingRequestCount": str(0 if done else job.request_count)}
