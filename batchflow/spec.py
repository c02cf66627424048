"""The spec: typed, frozen records made once, at the boundary, by ``load_spec``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SPEC_VERSION = 1


@dataclass(frozen=True)
class BackendSpec:
    type: str = "local"  # local | gemini | vertex
    api_key_env: str | None = None  # gemini: the variable's *name*
    project: str | None = None  # vertex
    location: str | None = None  # vertex
    staging: str | None = None  # vertex: gs://bucket/prefix
    base_url: str | None = None  # any: e.g. a running `batchflow emulator`


@dataclass(frozen=True)
class SourceSpec:
    type: str  # files | bigquery | inline
    path: str | None = None  # files: local path or glob, or gs://; already resolved against the spec's dir
    format: str | None = None  # jsonl | json | csv | parquet; None: from the extension
    records: tuple[Mapping[str, Any], ...] | None = None  # inline
    table: str | None = None  # bigquery
    query: str | None = None  # bigquery
    on_bad_record: str = "fail"  # fail | skip


@dataclass(frozen=True)
class JobsSpec:
    max_requests: int | None = None  # None: the default (30,000) capped by the backend's limit
    max_bytes: int | None = None  # None: the backend's limit
    max_concurrent: int = 4
    poll_interval: float = 30.0  # seconds


@dataclass(frozen=True)
class BackoffSpec:
    initial: float = 30.0  # seconds
    max: float = 600.0
    multiplier: float = 2.0


@dataclass(frozen=True)
class RetrySpec:
    job_attempts: int = 3
    request_attempts: int = 3
    backoff: BackoffSpec = field(default_factory=BackoffSpec)


@dataclass(frozen=True)
class OutputSpec:
    type: str = "files"  # files | bigquery
    path: str | None = None  # files: resolved against the spec's dir
    format: str | None = None  # jsonl | csv | parquet; None: from the extension
    table: str | None = None  # bigquery
    parse: str = "text"  # text | json
    include_record: bool = True
    include_response: bool = False
    max_failed: int | float = 0  # an int is a count; a float in [0, 1] is a share ("1%" -> 0.01)


@dataclass(frozen=True)
class Spec:
    path: Path  # the spec file
    name: str
    backend: BackendSpec
    model: str
    source: SourceSpec
    output: OutputSpec
    state_dir: Path  # .batchflow/ beside the spec unless given; the spec's own state lives in state_dir/name
    task: str = "generate"  # generate | embed
    key: str | None = None  # template; None: the record's ordinal
    prompt: str | None = None
    system: str | None = None
    generation_config: Mapping[str, Any] | None = None
    request: Mapping[str, Any] | None = None
    content: str | None = None  # task: embed
    embed_config: Mapping[str, Any] | None = None
    jobs: JobsSpec = field(default_factory=JobsSpec)
    retry: RetrySpec = field(default_factory=RetrySpec)
    # "prompt" -> "spec.yaml:12:3": where each top-level key (and template leaf, by dotted path) was written
    locations: Mapping[str, str] = field(default_factory=dict)
    # the spec as loaded (after ${VAR}), for fingerprints; never holds a secret, since keys come by variable name
    raw: Mapping[str, Any] = field(default_factory=dict)

    def where(self, dotted: str) -> str:
        """``file:line:col`` of a spec path, or of its nearest written parent, or the file alone."""
        parts = dotted.split(".")
        for n in range(len(parts), 0, -1):
            found = self.locations.get(".".join(parts[:n]))
            if found:
                return found
        return str(self.path)


def load_spec(path: Path | str) -> Spec:
    """Read, expand, validate and type a spec file; raise ``SpecError`` listing every problem."""
    raise NotImplementedError
