"""The spec: typed, frozen records made once, at the boundary, by ``load_spec``."""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchflow import logs
from batchflow.spec import models
from batchflow.spec.check import SCHEMA_PATH, SPEC_VERSION, check_version, format_problem, schema_problems, spec_schema
from batchflow.spec.reader import InvalidSpec, Problem, Reader, read_text
from batchflow.spec.units import parse_duration, parse_share, parse_size

log = logs.get_logger(__name__)


@dataclass(frozen=True)
class BackendSpec:
    type: str = "local"  # local | gemini | vertex
    api_key_env: str | None = None  # gemini: the variable's *name*
    project: str | None = None  # vertex
    location: str | None = None  # vertex
    staging: str | None = None  # vertex: gs://bucket/prefix
    base_url: str | None = None  # any: e.g. a running `batchflow emulator`
    key_labels: bool = False  # vertex: each request also carries its key in labels.batchflow_key


@dataclass(frozen=True)
class SourceSpec:
    type: str  # files | bigquery | inline
    path: str | None = None  # files: local path or glob, or gs://; already resolved against the spec's dir
    format: str | None = None  # jsonl | json | csv | parquet; None: from the extension
    records: tuple[Mapping[str, Any], ...] | None = None  # inline
    table: str | None = None  # bigquery
    query: str | None = None  # bigquery
    order_by: str | None = None  # bigquery: SQL ORDER BY list; load_spec fills it from a one-column key
    native: bool = False  # bigquery + vertex + bigquery output: requests built and joined inside BigQuery
    project: str | None = None  # bigquery: the project that runs the queries (default: the table's)
    location: str | None = None  # bigquery: where the queries run (default: the client's)
    on_bad_record: str = "fail"  # fail | skip
    allow_empty: bool = False  # an input with no records runs to an empty output instead of stopping (exit 2)


@dataclass(frozen=True)
class JobsSpec:
    max_requests: int | None = None  # None: the default (30,000) capped by the backend's limit
    max_bytes: int | None = None  # None: the backend's limit
    max_concurrent: int = 4
    poll_interval: float = 30.0  # seconds
    stuck_after: float = 24 * 3600.0  # pending, or running without progress, this long: cancelled and sent again
    # (the default is longer where the service queues longer: ``stuck_default``)
    output_wait: float = 1800.0  # how long a succeeded job's output may be late before it counts as lost
    max_enqueued_tokens: int | None = None  # gemini: in-flight input tokens per model; None: the tier table's
    max_media_bytes: int | None = None  # gemini: media bytes held in the Files API at once; None: the project quota


@dataclass(frozen=True)
class BackoffSpec:
    initial: float = 30.0  # seconds
    max: float = 600.0
    multiplier: float = 2.0


@dataclass(frozen=True)
class RetrySpec:
    job_attempts: int = 3
    request_attempts: int = 3
    call_attempts: int = 3  # a remote call that timed out, tried this many times in all (libs/deadlines.py)
    backoff: BackoffSpec = field(default_factory=BackoffSpec)
    on: frozenset[str] = frozenset()  # answers sent again too: parse_error, max_tokens (opt-in)


@dataclass(frozen=True)
class OutputSpec:
    type: str = "files"  # files | bigquery
    path: str | None = None  # files: resolved against the spec's dir
    format: str | None = None  # jsonl | csv | parquet; None: from the extension
    table: str | None = None  # bigquery
    write: str | None = None  # bigquery: truncate | append (required: replacing a table is never implicit)
    location: str | None = None  # bigquery: where the load and merge jobs run (default: the dataset's)
    parse: str = "text"  # text | json
    include_record: bool = True
    include_response: bool = False
    normalize: bool = False  # task embed: vectors L2-normalised, as float32
    max_failed: int | float = 0  # an int is a count; a float in [0, 1] is a share ("1%" -> 0.01)
    # filled in by load_spec for typed destinations (bigquery), which make their columns from them:
    task: str = "generate"
    response_schema: Mapping[str, Any] | None = None  # generation_config's (or request's) response_schema
    model: str = ""  # the spec's model, recorded on each embedding row
    dimensions: int | None = None  # task embed: every vector's size, when the spec fixes it (parquet's fixed list)


@dataclass(frozen=True)
class BudgetSpec:
    """Caps on committed spend (cost.py); None: no cap."""

    max_cost_usd: float | None = None
    max_input_tokens: int | None = None

    @property
    def capped(self) -> bool:
        return self.max_cost_usd is not None or self.max_input_tokens is not None


@dataclass(frozen=True)
class Spec:
    path: Path  # the spec file
    name: str
    backend: BackendSpec
    model: str
    source: SourceSpec
    output: OutputSpec
    state_dir: Path  # .batchflow/ beside the spec unless given; the spec's own state lives in state_dir/name
    state_url: str | None = None  # state.dir when it is gs://: the state lives there, state_dir is a local cache
    lease_seconds: float = 60.0  # state.lease: how long a gs:// state's lease holds without a renewal
    task: str = "generate"  # generate | embed
    key: str | None = None  # template; None: the record's ordinal
    prompt: str | None = None  # the prompt when it is one text template
    system: str | None = None
    # prompt / system written as a list of parts: a str is a text template, {"media": T, "mime_type": T?} a file
    prompt_parts: tuple[str | Mapping[str, str], ...] | None = None
    system_parts: tuple[str | Mapping[str, str], ...] | None = None
    generation_config: Mapping[str, Any] | None = None
    request: Mapping[str, Any] | str | None = None  # a mapping, or one "{{ expression }}" giving the request
    content: str | None = None  # task: embed, when it is one text template
    content_parts: tuple[str | Mapping[str, str], ...] | None = None  # task: embed, a list of parts as prompt's
    embed_config: Mapping[str, Any] | None = None
    jobs: JobsSpec = field(default_factory=JobsSpec)
    retry: RetrySpec = field(default_factory=RetrySpec)
    pricing: Mapping[str, float] = field(default_factory=dict)  # pricing: as written; over the models.py table
    budget: BudgetSpec = field(default_factory=BudgetSpec)
    # "prompt" -> "spec.yaml:12:3": where each top-level key (and template leaf, by dotted path) was written
    locations: Mapping[str, str] = field(default_factory=dict)
    # the spec as loaded (after ${VAR}), for fingerprints; never holds a secret, since keys come by variable name
    raw: Mapping[str, Any] = field(default_factory=dict)
    # load_spec(allow_unset_env=True): dotted path -> "file:line:col: path: environment variable X is not set"
    unset_env: Mapping[str, str] = field(default_factory=dict)
    label: str = ""  # the spec's path as it was given (the locations start with it); "": str(path)

    def where(self, dotted: str) -> str:
        """``file:line:col`` of a spec path, or of its nearest written parent, or the file alone."""
        parts = dotted.split(".")
        for n in range(len(parts), 0, -1):
            found = self.locations.get(".".join(parts[:n]))
            if found:
                return found
        return self.label or str(self.path)

    def at(self, dotted: str, message: str) -> str:
        """``message`` located at ``dotted`` in the spec, unless it names a place in the spec already: an error
        re-raised on its way out keeps the one place it was given, never ``t.yaml:3:1: t.yaml:24:7: ...``."""
        return message if self.names_place(message) else f"{self.where(dotted)}: {message}"

    def names_place(self, message: str) -> bool:
        """Whether ``message`` starts with a place in this spec (``t.yaml:24:7:``, or the file alone)."""
        return message.startswith(f"{self.label or self.path}:")


STATE_DIR_ENV = "BATCHFLOW_STATE_DIR"


def load_spec(path: Path | str, environ: Mapping[str, str] | None = None, *, state_dir: Path | str | None = None,
              allow_unset_env: bool = False) -> Spec:
    """Read, expand, validate and type a spec file; raise ``InvalidSpec`` listing every problem.

    ``state_dir`` (else ``$BATCHFLOW_STATE_DIR``) replaces the spec's ``state.dir``: the machine that runs a spec
    decides where its state lives (a read-only checkout, a shared volume); relative to the working directory, as
    any path given on a command line. ``allow_unset_env``: see ``spec_yaml``; the unset variables are in
    ``Spec.unset_env``."""
    label = str(path)
    environ = os.environ if environ is None else environ
    try:
        doc = Reader(environ, allow_unset_env).read(read_text(path, label), label)
        check_version(doc, label)
        problems = doc.problems + [p for p in schema_problems(doc) if p[2] not in doc.env_paths]
    except RecursionError:
        raise InvalidSpec([f"{label}:1:1: the spec is nested too deeply"]) from None
    if not problems:
        problems += _model_problems(doc) + _location_problems(doc) + _media_problems(doc)
    if problems:
        raise InvalidSpec([format_problem(label, p) for p in sorted(set(problems))])
    spec = _to_spec(Path(os.path.abspath(path)), label, doc)
    state_dir = state_dir or environ.get(STATE_DIR_ENV)
    return _elsewhere(spec, str(state_dir)) if state_dir else spec


def _elsewhere(spec: Spec, directory: str) -> Spec:
    """The spec with its state in ``directory`` (local, or gs://) instead of its ``state.dir``."""
    return dataclasses.replace(spec, state_dir=_state_dir(directory, Path.cwd()), state_url=_state_url(directory))


def _model_problems(doc: Reader) -> list[Problem]:
    """A model that is a typo of a known one, or of the other task, is an error; any other unknown model is
    only a warning (new models appear monthly; ``plan`` asks the service)."""
    data = doc.data
    name, backend, task = data["model"], data.get("backend", {}).get("type", "local"), data.get("task", "generate")
    if models.known(name, backend, task) is not None:
        return []
    line, col = doc.where("model")
    other = models.any_named(name)
    if other is not None and other.task != task:
        return [(line, col, "model", f"{name} is a model for task {other.task}; this spec's task is {task}")]
    near = models.near_misses(name, backend, task)
    if near:
        return [(line, col, "model", f"unknown model {name!r} (did you mean {near[0]!r}?)")]
    log.warning("model not in batchflow's table of batch models; the service decides", model=name,
                backend=backend, task=task, where=f"{doc.label}:{line}:{col}")
    return []



def stuck_default(data: Mapping[str, Any]) -> float:
    """``jobs.stuck_after`` when the spec gives none: 24 h, or an hour past a longer healthy queue (Vertex keeps a
    Gemini embedding job queued up to 72 h, then expires it itself), so a healthy queue is never cancelled."""
    if data.get("backend", {}).get("type") != "vertex" or data.get("task") != "embed":
        return JobsSpec.stuck_after
    queue = models.embedding_of(data["model"]).vertex_queue_hours * 3600.0
    return JobsSpec.stuck_after if queue <= JobsSpec.stuck_after else queue + 3600.0


def _dimensions(data: Mapping[str, Any]) -> int | None:
    """The size of every embedding a spec asks for: ``embed_config.output_dimensionality`` when it is a number, the
    model's default when it is not given; None when a template picks it per record (or for task generate)."""
    if data.get("task") != "embed":
        return None
    dims = (data.get("embed_config") or {}).get("output_dimensionality")
    if dims is None:
        return models.embedding_of(data["model"]).dimensions[2]
    return dims if isinstance(dims, int) else None


def _media_problems(doc: Reader) -> list[Problem]:
    """A media part in ``content`` for an embedding model that embeds text alone (gemini-embedding-001, the legacy
    text-embedding models): refused here, before anything is read or staged, at the part's place."""
    data = doc.data
    content = data.get("content")
    if data.get("task") != "embed" or not isinstance(content, list):
        return []
    if models.embedding_of(data["model"]).media is not None:
        return []
    name = models.bare(data["model"])
    problems: list[Problem] = []
    for i, part in enumerate(content):
        if isinstance(part, Mapping):
            line, col = doc.where(f"content.{i}")
            problems.append((line, col, f"content.{i}", f"{name} embeds text only, not media: give a multimodal "
                             "embedding model (gemini-embedding-2) or leave the media part out"))
    return problems


def _location_problems(doc: Reader) -> list[Problem]:
    """A Vertex location where the embedding model runs no batch jobs (their own list, ``models.Embedding``)."""
    data = doc.data
    backend = data.get("backend", {})
    if backend.get("type") != "vertex" or data.get("task") != "embed" or "location" not in backend:
        return []  # (a vertex backend without a location is the schema's error)
    embedding = models.embedding_of(data["model"])
    problems: list[Problem] = []
    if data.get("source", {}).get("native") and not embedding.vertex_bigquery:
        line, col = doc.where("source.native")
        problems.append((line, col, "source.native", f"{models.bare(data['model'])} reads no BigQuery table on "
                         "Vertex (JSONL on Cloud Storage only): leave out source.native, and the table is read and "
                         "staged on GCS as JSONL"))
    places = embedding.vertex_locations
    if places is not None and backend["location"] not in places:
        line, col = doc.where("backend.location")
        problems.append((line, col, "backend.location", f"{models.bare(data['model'])} runs Vertex batch jobs in "
                         f"{', '.join(places)} only, not {backend['location']!r}"))
    return problems


# --- typing -------------------------------------------------------------------------------------------------

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_TEMPLATES = ("key", "prompt", "system", "generation_config", "request", "content", "embed_config")


def _resolve(path: str | None, base: Path) -> str | None:
    """A relative local path is relative to the spec's directory; URLs and absolute paths stay as written."""
    if path is None or _URL.match(path):
        return path
    return os.path.normpath(os.path.join(base, os.path.expanduser(path)))


def _to_spec(path: Path, label: str, doc: Reader) -> Spec:
    data: dict[str, Any] = doc.data
    base = path.parent
    source, output = data["source"], data["output"]
    records = source.get("records")
    jobs, retry = data.get("jobs", {}), data.get("retry", {})
    return Spec(
        path=path,
        name=data["name"],
        backend=BackendSpec(**data.get("backend", {})),
        model=data["model"],
        task=data.get("task", "generate"),
        source=SourceSpec(
            **{
                **source,
                "path": _resolve(source.get("path"), base),
                "records": None if records is None else tuple(records),
                "order_by": _order_by(source, data.get("key")),
            }
        ),
        output=OutputSpec(
            **{
                **output,
                "path": _resolve(output.get("path"), base),
                "max_failed": parse_share(output.get("max_failed", 0)),
                "task": data.get("task", "generate"),
                "response_schema": _response_schema(data.get("generation_config"), data.get("request")),
                "model": models.bare(data["model"]),
                "dimensions": _dimensions(data),
            }
        ),
        state_dir=_state_dir(data.get("state", {}).get("dir", ".batchflow"), base),
        state_url=_state_url(data.get("state", {}).get("dir")),
        lease_seconds=parse_duration(data.get("state", {}).get("lease", "60s")),
        jobs=JobsSpec(
            max_requests=jobs.get("max_requests"),
            max_bytes=None if "max_bytes" not in jobs else parse_size(jobs["max_bytes"]),
            max_concurrent=jobs.get("max_concurrent", JobsSpec.max_concurrent),
            poll_interval=parse_duration(jobs.get("poll_interval", JobsSpec.poll_interval)),
            stuck_after=parse_duration(jobs.get("stuck_after", stuck_default(data))),
            output_wait=parse_duration(jobs.get("output_wait", JobsSpec.output_wait)),
            max_enqueued_tokens=jobs.get("max_enqueued_tokens"),
            max_media_bytes=None if "max_media_bytes" not in jobs else parse_size(jobs["max_media_bytes"]),
        ),
        retry=_retry(retry),
        pricing=data.get("pricing", {}),
        budget=BudgetSpec(**data.get("budget", {})),
        locations={k: f"{label}:{line}:{col}" for k, (line, col) in doc.values.items() if k},
        **_media_key(source, data),
        raw=data,
        unset_env={p[2]: format_problem(label, p) for p in doc.notes},
        label=label,
        **{k: data[k] for k in _TEMPLATES if k in data and not isinstance(data[k], list)},
        prompt_parts=_parts(data.get("prompt")),
        system_parts=_parts(data.get("system")),
        content_parts=_parts(data.get("content")),
    )


def _media_key(source: Mapping[str, Any], data: Mapping[str, Any]) -> dict[str, Any]:
    """A folder of media files is keyed by each file's path from the glob's root, unless the spec says otherwise."""
    media = source.get("type") == "files" and source.get("format") == "media" and "key" not in data
    return {"key": "{{ relative_path }}"} if media else {}


def _parts(value: Any) -> tuple[str | Mapping[str, str], ...] | None:
    """A prompt, system or content written as a list of parts (checked by the schema), as a tuple; None for a
    string."""
    return tuple(value) if isinstance(value, list) else None


_COLUMN_KEY = re.compile(r"^\s*\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}\s*$")


def _order_by(source: Mapping[str, Any], key: str | None) -> str | None:
    """A bigquery source's row order: as given, else the key's column when the key is ``{{ column }}``."""
    if source.get("type") != "bigquery" or source.get("order_by"):
        return source.get("order_by")
    found = _COLUMN_KEY.match(key or "")
    return f"`{found.group(1)}`" if found else None


def _response_schema(generation_config: Any, request: Any) -> Mapping[str, Any] | None:
    """The response schema the spec asks for, under either spelling, in ``generation_config`` or ``request``."""
    configs = [generation_config]
    if isinstance(request, Mapping):
        configs += [request.get("generation_config"), request.get("generationConfig")]
    for config in configs:
        if isinstance(config, Mapping):
            found = config.get("response_schema") or config.get("responseSchema")
            if isinstance(found, Mapping):
                return found
    return None


def _retry(retry: Mapping[str, Any]) -> RetrySpec:
    backoff = retry.get("backoff", {})
    defaults = BackoffSpec()
    return RetrySpec(
        job_attempts=retry.get("job_attempts", RetrySpec.job_attempts),
        request_attempts=retry.get("request_attempts", RetrySpec.request_attempts),
        call_attempts=retry.get("call_attempts", RetrySpec.call_attempts),
        on=frozenset(retry.get("on", ())),
        backoff=BackoffSpec(
            initial=parse_duration(backoff.get("initial", defaults.initial)),
            max=parse_duration(backoff.get("max", defaults.max)),
            multiplier=float(backoff.get("multiplier", defaults.multiplier)),
        ),
    )


__all__ = ["SCHEMA_PATH", "SPEC_VERSION", "STATE_DIR_ENV", "InvalidSpec", "Spec", "load_spec", "spec_schema"]


def _state_url(directory: str | None) -> str | None:
    return directory.rstrip("/") if directory and "://" in directory else None


def _state_dir(directory: str, base: Path) -> Path:
    """The local state directory; for a gs:// state, its cache (under XDG_CACHE_HOME, named by the URL)."""
    url = _state_url(directory)
    if url is None:
        return Path(_resolve(directory, base) or base)
    import hashlib
    import os

    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "batchflow" / "state"
    return cache / hashlib.sha256(url.encode()).hexdigest()[:16]
