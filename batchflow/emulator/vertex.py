"""The Vertex AI `batchPredictionJobs` REST surface: paths, list filters, and the handlers `routes.py` mounts.

Paths are `projects/{p}/locations/{l}/batchPredictionJobs[/{id}[:cancel]]` under any version prefix (the SDK
uses `/v1beta1`). Handlers take the engine, the path parameters, the query and the parsed body, and return the
JSON to answer; they know nothing of HTTP.

List filters follow AIP-160 as far as clients of batch jobs use them: `field = value` terms (value quoted or
bare) joined by `AND`, on `state`, `display_name` / `displayName`, `model` and `labels.KEY`. Anything else is a
400, as the service answers an unsupported filter.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from batchflow.emulator.errors import invalid_argument
from batchflow.emulator.store import page_size
from batchflow.emulator.vertex_engine import JobFilter, VertexJobs
from batchflow.emulator.vertex_jobs import VertexJob

Handler = Callable[[VertexJobs, dict[str, str], dict[str, str], Any], Any]

_DEFAULT_PAGE, _MAX_PAGE = 100, 1000
_TERM = re.compile(r'^\s*(?P<field>[A-Za-z_][A-Za-z0-9_.]*)\s*=\s*(?P<value>"(?:[^"\\]|\\.)*"|[^\s"()]+)\s*$')
_AND = re.compile(r"\s+AND\s+")
_COLLECTION = r"projects/(?P<project>[^/:]+)/locations/(?P<location>[^/:]+)/batchPredictionJobs"
_JOB = _COLLECTION + r"/(?P<id>[^/:]+)"


def create(jobs: VertexJobs, params: dict[str, str], query: dict[str, str], body: Any) -> Any:
    """POST …/batchPredictionJobs."""
    return jobs.create(params["project"], params["location"], body)


def get(jobs: VertexJobs, params: dict[str, str], query: dict[str, str], body: Any) -> Any:
    """GET …/batchPredictionJobs/ID."""
    return jobs.get(params["project"], params["location"], params["id"])


def list_jobs(jobs: VertexJobs, params: dict[str, str], query: dict[str, str], body: Any) -> Any:
    """GET …/batchPredictionJobs?pageSize&pageToken&filter."""
    size = page_size(query.get("pageSize"), _DEFAULT_PAGE, _MAX_PAGE)
    keep = parse_filter(query.get("filter", ""))
    return jobs.list(params["project"], params["location"], size, query.get("pageToken"), keep)


def cancel(jobs: VertexJobs, params: dict[str, str], query: dict[str, str], body: Any) -> Any:
    """POST …/batchPredictionJobs/ID:cancel → {}."""
    return jobs.cancel(params["project"], params["location"], params["id"])


def delete(jobs: VertexJobs, params: dict[str, str], query: dict[str, str], body: Any) -> Any:
    """DELETE …/batchPredictionJobs/ID → a finished Operation."""
    return jobs.delete(params["project"], params["location"], params["id"])


# (method, path pattern after the version prefix, endpoint name for counters and fault plans, handler)
ROUTES: tuple[tuple[str, str, str, Handler], ...] = (
    ("POST", _COLLECTION, "vertex.batchPredictionJobs.create", create),
    ("GET", _JOB, "vertex.batchPredictionJobs.get", get),
    ("GET", _COLLECTION, "vertex.batchPredictionJobs.list", list_jobs),
    ("POST", _JOB + ":cancel", "vertex.batchPredictionJobs.cancel", cancel),
    ("DELETE", _JOB, "vertex.batchPredictionJobs.delete", delete),
)


def parse_filter(text: str) -> JobFilter:
    """A predicate over (job, visible state) for a list filter; 400 for a filter this emulator cannot apply."""
    terms = [_term(part) for part in _AND.split(text.strip())] if text.strip() else []
    return lambda job, state: all(term(job, state) for term in terms)


def _term(text: str) -> JobFilter:
    found = _TERM.match(text)
    if found is None:
        raise invalid_argument(f"Unsupported filter {text.strip()!r}: expected field=\"value\" terms joined by AND")
    name, value = found["field"], _unquote(found["value"])
    if name == "state":
        if not value.startswith("JOB_STATE_"):
            raise invalid_argument(f"Invalid filter: state must be a JOB_STATE_* value, got {value!r}")
        return lambda job, state: f"JOB_STATE_{state}" == value
    if name in ("display_name", "displayName"):
        return lambda job, state: job.display_name == value
    if name == "model":
        return lambda job, state: job.model == value or job.model.rsplit("/", 1)[-1] == value
    if name.startswith("labels.") and len(name) > len("labels."):
        key = name.removeprefix("labels.")
        return lambda job, state: _label(job, key) == value
    raise invalid_argument(f"Unsupported filter field {name!r}: use state, display_name, model or labels.KEY")


def _label(job: VertexJob, key: str) -> str | None:
    return (job.labels or {}).get(key)


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value
