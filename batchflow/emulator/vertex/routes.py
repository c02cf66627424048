"""The Vertex AI `batchPredictionJobs` REST surface: paths and the handlers `routes.py` mounts.

Paths are `projects/{p}/locations/{l}/batchPredictionJobs[/{id}[:cancel]]` under any version prefix (the SDK
uses `/v1beta1`). Handlers take the engine, the path parameters, the query and the parsed body, and return the
JSON to answer; they know nothing of HTTP.
List filters are `job_filter.py`'s.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from batchflow.emulator.jobs.store import page_size
from batchflow.emulator.vertex.engine import VertexJobs
from batchflow.emulator.vertex.job_filter import parse_filter
from batchflow.emulator.vertex.jobs import with_enum_numbers

Handler = Callable[[VertexJobs, dict[str, str], dict[str, str], Any], Any]

_DEFAULT_PAGE, _MAX_PAGE = 100, 1000
_COLLECTION = r"projects/(?P<project>[^/:]+)/locations/(?P<location>[^/:]+)/batchPredictionJobs"
_JOB = _COLLECTION + r"/(?P<id>[^/:]+)"


def create(jobs: VertexJobs, params: dict[str, str], query: dict[str, str], body: Any) -> Any:
    """POST …/batchPredictionJobs."""
    return _as_asked(query)(jobs.create(params["project"], params["location"], body))


def get(jobs: VertexJobs, params: dict[str, str], query: dict[str, str], body: Any) -> Any:
    """GET …/batchPredictionJobs/ID."""
    return _as_asked(query)(jobs.get(params["project"], params["location"], params["id"]))


def list_jobs(jobs: VertexJobs, params: dict[str, str], query: dict[str, str], body: Any) -> Any:
    """GET …/batchPredictionJobs?pageSize&pageToken&filter."""
    size = page_size(query.get("pageSize"), _DEFAULT_PAGE, _MAX_PAGE)
    keep = parse_filter(query.get("filter", ""))
    page = jobs.list(params["project"], params["location"], size, query.get("pageToken"), keep)
    if "batchPredictionJobs" in page:
        page["batchPredictionJobs"] = [_as_asked(query)(job) for job in page["batchPredictionJobs"]]
    return page


def cancel(jobs: VertexJobs, params: dict[str, str], query: dict[str, str], body: Any) -> Any:
    """POST …/batchPredictionJobs/ID:cancel → {}."""
    return jobs.cancel(params["project"], params["location"], params["id"])


def delete(jobs: VertexJobs, params: dict[str, str], query: dict[str, str], body: Any) -> Any:
    """DELETE …/batchPredictionJobs/ID → a finished Operation."""
    return jobs.delete(params["project"], params["location"], params["id"])


def _as_asked(query: dict[str, str]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """How a job is rendered for this request: enums by name (proto-JSON's default) or, when the query's `$alt` is
    `json;enum-encoding=int` (what google-cloud-aiplatform's REST transport sends), by number."""
    if "enum-encoding=int" in query.get("$alt", "").split(";"):
        return with_enum_numbers
    return lambda job: job


# (method, path pattern after the version prefix, endpoint name for counters and fault plans, handler)
ROUTES: tuple[tuple[str, str, str, Handler], ...] = (
    ("POST", _COLLECTION, "vertex.batchPredictionJobs.create", create),
    ("GET", _JOB, "vertex.batchPredictionJobs.get", get),
    ("GET", _COLLECTION, "vertex.batchPredictionJobs.list", list_jobs),
    ("POST", _JOB + ":cancel", "vertex.batchPredictionJobs.cancel", cancel),
    ("DELETE", _JOB, "vertex.batchPredictionJobs.delete", delete),
)
