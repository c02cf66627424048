"""Vertex batch prediction jobs: the create body read into a record, the record rendered as a BatchPredictionJob.

A create body is what google-genai sends in Vertex mode (`_CreateBatchJobParameters_to_vertex`):
`{"model": "publishers/google/models/M", "displayName", "inputConfig": {"instancesFormat": "jsonl",
"gcsSource": {"uris": [...]}}, "outputConfig": {"predictionsFormat": "jsonl", "gcsDestination":
{"outputUriPrefix": "gs://..."}}}`. As for Gemini jobs, a live job's state follows from the clock (PENDING for
the first quarter of its time, then RUNNING; always PENDING when stuck) and only the final state is written. A
cancelled job is CANCELLING for a while (`cancel_time`), then ends as `cancel_outcome` says.

A job whose lines partly failed still ends SUCCEEDED, with `completionStats.failedCount` > 0: that is what the
service reports for Gemini batch jobs (JOB_STATE_PARTIALLY_SUCCEEDED exists in the enum but is not used for it).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from batchflow.emulator.jobs.records import CANCELLING, LIVE, TERMINAL, live_state, start_time
from batchflow.emulator.jobs.store import rfc3339
from batchflow.emulator.vertex import bigquery as vertex_bigquery
from batchflow.emulator.wire import proto_json
from batchflow.emulator.wire.errors import invalid_argument
from batchflow.emulator.wire.request_checks import field as proto_field

# JobState in its proto order: the number of a name is its index (`$alt=json;enum-encoding=int` answers those)
JOB_STATES = tuple(f"JOB_STATE_{name}" for name in (
    "UNSPECIFIED", "QUEUED", "PENDING", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLING", "CANCELLED", "PAUSED",
    "EXPIRED", "UPDATING", "PARTIALLY_SUCCEEDED"))
_ERROR_STATES = frozenset({"FAILED", "CANCELLED"})  # `error`: "Only populated when the job's state is" one of these
_GCS_URI = re.compile(r"^gs://[a-z0-9][a-z0-9._-]{2,221}(/.*)?$")
_MODEL = re.compile(r"^(projects/[^/]+/locations/[^/]+/)?(publishers/[^/]+/)?models/[^/]+$")


@dataclass
class VertexJob:
    """Everything the emulator knows about one batch prediction job; `seq` orders listings and page tokens."""

    id: str  # numeric, as the service's
    seq: int
    project: str
    location: str
    display_name: str
    model: str  # as sent: publishers/google/models/...
    input_config: dict[str, Any]
    output_config: dict[str, Any]
    output_dir: str  # <outputUriPrefix>/prediction-model-<create time>
    create_time: float
    due_time: float
    labels: dict[str, str] | None = None
    model_parameters: dict[str, Any] | None = None  # the model's parameters for every instance (embeddings)
    state: str = LIVE
    update_time: float = 0.0
    end_time: float | None = None
    computed: bool = False  # the prediction files are written (or the job's error is known)
    request_count: int = 0
    succeeded: int = 0
    failed: int = 0
    error: dict[str, Any] | None = field(default=None)
    # what the fault plan decided at creation (faults.JobFaults), and what followed from it
    stuck: bool = False
    late_output: bool = False
    output_gone: bool = False
    cancel_delivers: bool = False
    partial: bool = False  # cancelled, with the predictions it had finished
    output_at: float | None = None  # the predictions are uploaded then (None: when the job ends)
    gone_at: float | None = None  # the predictions are deleted then (None: kept, or deleted already)
    cancel_time: float | None = None  # when a cancel moved it to CANCELLING
    cancel_outcome: str | None = None  # how CANCELLING ends: CANCELLED or SUCCEEDED

    @property
    def name(self) -> str:
        """The resource name, `projects/P/locations/L/batchPredictionJobs/ID`."""
        return f"{parent(self.project, self.location)}/batchPredictionJobs/{self.id}"

    @property
    def input_uris(self) -> list[str]:
        """The `gcsSource.uris` the job reads."""
        return list(self.input_config["gcsSource"]["uris"])

    @property
    def start_time(self) -> float:
        """When the job starts RUNNING."""
        return start_time(self.create_time, self.due_time)

    @property
    def has_output(self) -> bool:
        """Whether the job ended with predictions: SUCCEEDED, or CANCELLED with those it had finished."""
        return self.state == "SUCCEEDED" or self.partial

    @property
    def deferred(self) -> bool:
        """Whether its predictions wait on local disk until the job ends (late, or partial on a cancel)."""
        return self.late_output or self.cancel_delivers

    def visible_state(self, now: float) -> str:
        """The state a client sees now (without the JOB_STATE_ prefix)."""
        if self.state != LIVE:
            return self.state
        return "PENDING" if self.stuck else live_state(self.create_time, self.due_time, now)


def parent(project: str, location: str) -> str:
    """`projects/P/locations/L`."""
    return f"projects/{project}/locations/{location}"


def new_job_id() -> str:
    """A numeric id of 19 digits, shaped like the service's."""
    return str(10**18 + secrets.randbelow(9 * 10**18))


def parse_create(body: Any, job_id: str, seq: int, project: str, location: str, now: float,
                 job_seconds: float) -> VertexJob:
    """A new job from a create body; raises ApiError(400) for a malformed one."""
    if not isinstance(body, Mapping):
        raise invalid_argument("The request body must be a BatchPredictionJob object")
    # as Google's JSON parser reads it first: an unknown name or a mistyped value refuses the body (output-only
    # fields parse, and are then ignored, as AIP-203 has services do)
    proto_json.check("vertex", "batchPredictionJob", body, "batch_prediction_job")
    display_name = proto_field(body, "displayName")
    if not isinstance(display_name, str) or not display_name:
        raise invalid_argument("batch_prediction_job.display_name: required field is not set")
    model = proto_field(body, "model")
    if not isinstance(model, str) or not _MODEL.match(model):
        raise invalid_argument(f"batch_prediction_job.model: expected publishers/google/models/MODEL, got {model!r}")
    input_config = _input_config(proto_field(body, "inputConfig"))
    output_config = _output_config(proto_field(body, "outputConfig"))
    prefix = str(proto_field(proto_field(output_config, "gcsDestination"), "outputUriPrefix") or "").rstrip("/")
    return VertexJob(id=job_id, seq=seq, project=project, location=location, display_name=display_name,
                     model=model, input_config=input_config, output_config=output_config,
                     output_dir=vertex_bigquery.output_table(output_config, now)
                     or f"{prefix}/prediction-model-{rfc3339(now)}", create_time=now,
                     due_time=now + job_seconds, update_time=now, labels=_labels(proto_field(body, "labels")),
                     model_parameters=_model_parameters(proto_field(body, "modelParameters")))


def _model_parameters(value: Any) -> dict[str, Any] | None:
    """``modelParameters`` (a google.protobuf.Value; for text embeddings ``{"outputDimensionality": N,
    "autoTruncate": bool}``, as the online ``parameters`` are)."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise invalid_argument("batch_prediction_job.model_parameters: expected an object")
    return dict(value)


def _input_config(config: Any) -> dict[str, Any]:
    if not isinstance(config, Mapping):
        raise invalid_argument("batch_prediction_job.input_config: required field is not set")
    if proto_field(config, "bigquerySource") is not None:
        return vertex_bigquery.input_config(config)
    fmt = proto_field(config, "instancesFormat")
    if fmt != "jsonl":
        raise invalid_argument(f"input_config.instances_format: only 'jsonl' is supported, got {fmt!r}")
    uris = proto_field(proto_field(config, "gcsSource"), "uris")
    if isinstance(uris, str):
        uris = [uris]
    if not isinstance(uris, list) or not uris:
        raise invalid_argument("input_config.gcs_source.uris: at least one gs:// URI is required")
    for uri in uris:
        if not isinstance(uri, str) or not _GCS_URI.match(uri) or uri.rstrip("/").count("/") < 3:
            raise invalid_argument(f"input_config.gcs_source.uris: not a gs://bucket/object URI: {uri!r}")
    return {"instancesFormat": fmt, "gcsSource": {"uris": uris}}


def _output_config(config: Any) -> dict[str, Any]:
    if not isinstance(config, Mapping):
        raise invalid_argument("batch_prediction_job.output_config: required field is not set")
    if proto_field(config, "bigqueryDestination") is not None:
        return vertex_bigquery.output_config(config)
    fmt = proto_field(config, "predictionsFormat")
    if fmt != "jsonl":
        raise invalid_argument(f"output_config.predictions_format: only 'jsonl' is supported, got {fmt!r}")
    prefix = proto_field(proto_field(config, "gcsDestination"), "outputUriPrefix")
    if not isinstance(prefix, str) or not _GCS_URI.match(prefix):
        raise invalid_argument(f"output_config.gcs_destination.output_uri_prefix: not a gs:// URI: {prefix!r}")
    return {"predictionsFormat": fmt, "gcsDestination": {"outputUriPrefix": prefix}}


def _labels(labels: Any) -> dict[str, str] | None:
    if labels is None:
        return None
    if not isinstance(labels, Mapping) or not all(isinstance(v, str) for v in labels.values()):
        raise invalid_argument("batch_prediction_job.labels: expected a map of strings to strings")
    return dict(labels)


def resource(job: VertexJob, now: float) -> dict[str, Any]:
    """The BatchPredictionJob resource as the service returns it (int64 counts as strings, per proto-JSON).

    No time in it lies after `now`: a job cancelled before it would have started never started.
    """
    state = job.visible_state(now)
    started = state != "PENDING" and not job.stuck and job.start_time <= (now if job.end_time is None else
                                                                           job.end_time)
    body: dict[str, Any] = {
        "name": job.name, "displayName": job.display_name, "model": job.model,
        "inputConfig": job.input_config, "outputConfig": job.output_config, "state": f"JOB_STATE_{state}",
        "createTime": rfc3339(job.create_time),
        "updateTime": rfc3339(max(job.update_time, job.start_time) if started else job.update_time),
    }
    if job.labels:
        body["labels"] = job.labels
    if job.model_parameters:
        body["modelParameters"] = job.model_parameters
    if started:
        body["startTime"] = rfc3339(job.start_time)
    if state in ("RUNNING", CANCELLING, "SUCCEEDED") or job.partial:
        bigquery = vertex_bigquery.is_bigquery(job.input_config)
        body["outputInfo"] = vertex_bigquery.output_info(job.output_dir) if bigquery else \
            {"gcsOutputDirectory": job.output_dir}
    if state in TERMINAL:
        if job.end_time is not None:
            body["endTime"] = rfc3339(job.end_time)
        incomplete = max(0, job.request_count - job.succeeded - job.failed) if job.computed else job.request_count
        body["completionStats"] = {"successfulCount": str(job.succeeded), "failedCount": str(job.failed),
                                   "incompleteCount": str(incomplete)}
    if job.error is not None and state in _ERROR_STATES:
        body["error"] = job.error
    return body


def with_enum_numbers(job: dict[str, Any]) -> dict[str, Any]:
    """A rendered job with its `state` as the JobState number, for a client asking `$alt=json;enum-encoding=int`
    (google-cloud-aiplatform's REST transport always does); `state` is the resource's only enum."""
    return {**job, "state": JOB_STATES.index(job["state"])}
