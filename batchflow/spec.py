"""The spec: typed, frozen records made once, at the boundary, by ``load_spec``."""

from __future__ import annotations

import difflib
import functools
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator, ValidationError
from jsonschema.exceptions import best_match

from batchflow.errors import SpecError
from batchflow.units import parse_duration, parse_share, parse_size

SPEC_VERSION = 1
SCHEMA_PATH = Path(__file__).with_name("spec.schema.json")


class InvalidSpec(SpecError):
    """A spec with one or more problems: ``str()`` is every line, ``problems`` the list of them."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


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
    order_by: str | None = None  # bigquery: SQL ORDER BY list; load_spec fills it from a one-column key
    native: bool = False  # bigquery + vertex + bigquery output: requests built and joined inside BigQuery
    project: str | None = None  # bigquery: the project that runs the queries (default: the table's)
    location: str | None = None  # bigquery: where the queries run (default: the client's)
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
    write: str | None = None  # bigquery: truncate | append (required: replacing a table is never implicit)
    location: str | None = None  # bigquery: where the load and merge jobs run (default: the dataset's)
    parse: str = "text"  # text | json
    include_record: bool = True
    include_response: bool = False
    max_failed: int | float = 0  # an int is a count; a float in [0, 1] is a share ("1%" -> 0.01)
    # filled in by load_spec for typed destinations (bigquery), which make their columns from them:
    task: str = "generate"
    response_schema: Mapping[str, Any] | None = None  # generation_config's (or request's) response_schema


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
    request: Mapping[str, Any] | str | None = None  # a mapping, or one "{{ expression }}" giving the request
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


def load_spec(path: Path | str, environ: Mapping[str, str] | None = None) -> Spec:
    """Read, expand, validate and type a spec file; raise ``InvalidSpec`` listing every problem."""
    label = str(path)
    try:
        doc = _Reader(os.environ if environ is None else environ).read(_read_text(path, label), label)
        _check_version(doc, label)
        problems = doc.problems + [p for p in _schema_problems(doc) if p[2] not in doc.env_paths]
    except RecursionError:
        raise InvalidSpec([f"{label}:1:1: the spec is nested too deeply"]) from None
    if problems:
        raise InvalidSpec([_format(label, p) for p in sorted(set(problems))])
    return _to_spec(Path(os.path.abspath(path)), label, doc)


@functools.cache
def spec_schema() -> dict[str, Any]:
    """The spec's JSON Schema (draft 2020-12), as shipped in ``batchflow/spec.schema.json``."""
    schema: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return schema


# --- reading YAML with positions ----------------------------------------------------------------------------

_Problem = tuple[int, int, str, str]  # line, column (1-based), dotted path, message
_MAX_NODES = 200_000  # after aliases are expanded: stops "billion laughs" before it eats the memory
_VAR = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_TAG = "tag:yaml.org,2002:"
_SCALAR_TAGS = {_TAG + t for t in ("str", "int", "float", "bool", "null")}


def _pos(mark: yaml.Mark) -> tuple[int, int]:
    return mark.line + 1, mark.column + 1


def _read_text(path: Path | str, label: str) -> str:
    try:
        return Path(path).read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise InvalidSpec([f"{label}: cannot read: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError as exc:
        raise InvalidSpec([f"{label}: cannot read: not UTF-8 text (byte {exc.start})"]) from None


class _Reader:
    """Turns a composed YAML node tree into plain data, noting where every path was written."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ
        self.loader = yaml.SafeLoader("")
        self.values: dict[str, tuple[int, int]] = {}  # dotted path -> where its value starts
        self.keys: dict[str, tuple[int, int]] = {}  # dotted path -> where its key is written
        self.problems: list[_Problem] = []
        self.env_paths: set[str] = set()
        self.data: Any = None
        self.label = ""
        self._open: set[int] = set()
        self._count = 0

    def read(self, text: str, label: str) -> _Reader:
        self.label = label
        root = _compose(text, label)
        self.data = None if root is None else self.build(root, "")
        return self

    def where(self, dotted: str, *, key: bool = False) -> tuple[int, int]:
        parts = dotted.split(".") if dotted else []
        for n in range(len(parts), -1, -1):
            sub = ".".join(parts[:n])
            found = (key and self.keys.get(sub)) or self.values.get(sub)
            if found:
                return found
        return 1, 1

    def build(self, node: yaml.Node, dotted: str) -> Any:
        self._count += 1
        if self._count > _MAX_NODES:
            line, col = _pos(node.start_mark)
            raise InvalidSpec([f"{self.label}:{line}:{col}: the spec is too large once its aliases are expanded"])
        if id(node) in self._open:
            return self._problem(node, dotted, "an alias refers to itself")
        self.values.setdefault(dotted, _pos(node.start_mark))
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node, dotted)
        self._open.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                return [self.build(item, _join(dotted, str(i))) for i, item in enumerate(node.value)]
            return self._mapping(node, dotted)
        finally:
            self._open.discard(id(node))

    def _mapping(self, node: yaml.Node, dotted: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        merges = []
        for key_node, value_node in node.value:
            if key_node.tag == _TAG + "merge":
                merges.append(value_node)
            elif not isinstance(key_node, yaml.ScalarNode):
                self._problem(key_node, dotted, "a key must be a plain string")
            else:
                sub = _join(dotted, key_node.value)
                if key_node.value in out:
                    first = self.keys[sub][0]
                    self._problem(key_node, sub, f"duplicate key '{key_node.value}' (first on line {first})")
                self.keys.setdefault(sub, _pos(key_node.start_mark))
                out[key_node.value] = self.build(value_node, sub)
        for merged in merges:  # YAML "<<: *anchor": the mapping's own keys win
            for source in merged.value if isinstance(merged, yaml.SequenceNode) else [merged]:
                value = self.build(source, dotted)
                if not isinstance(value, dict):
                    self._problem(source, dotted, "'<<' must merge a mapping")
                    continue
                for key, item in value.items():
                    out.setdefault(key, item)
        return out

    def _scalar(self, node: yaml.ScalarNode, dotted: str) -> Any:
        value = self._construct(node, dotted)
        if isinstance(value, str) and "${" in value:
            expanded = _VAR.sub(lambda m: self._variable(m, node, dotted), value)
            if node.style is None and expanded != value:  # a plain ${N} may stand for a number or a bool
                tag = self.loader.resolve(yaml.ScalarNode, expanded, (True, False))  # type: ignore[no-untyped-call]
                return self._construct(yaml.ScalarNode(tag, expanded), dotted)
            return expanded
        return value

    def _construct(self, node: yaml.ScalarNode, dotted: str) -> Any:
        if node.tag == _TAG + "timestamp":  # keep dates as written: JSON has no date type
            return node.value
        if node.tag not in _SCALAR_TAGS:
            return self._problem(node, dotted, f"unsupported YAML tag {node.tag}")
        try:
            return self.loader.yaml_constructors[node.tag](self.loader, node)
        except (ValueError, OverflowError, yaml.YAMLError):
            return node.value

    def _variable(self, match: re.Match[str], node: yaml.Node, dotted: str) -> str:
        name = match.group(1)
        if name is None:  # "$${" escapes a literal "${"
            return "${"
        if name in self.environ:
            return self.environ[name]
        self.env_paths.add(dotted)
        self._problem(node, dotted, f"environment variable {name} is not set")
        return match.group(0)

    def _problem(self, node: yaml.Node, dotted: str, message: str) -> None:
        self.problems.append((*_pos(node.start_mark), dotted, message))


def _join(dotted: str, part: str) -> str:
    return f"{dotted}.{part}" if dotted else part


def _compose(text: str, label: str) -> yaml.Node | None:
    try:
        node: yaml.Node | None = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = _pos(mark) if mark else (1, 1)
        problem = exc.problem or exc.context or "malformed"
        raise InvalidSpec([f"{label}:{line}:{col}: invalid YAML: {problem}"]) from None
    except yaml.YAMLError as exc:  # the reader's errors: a character YAML does not allow
        offset = getattr(exc, "position", 0)
        line = text.count("\n", 0, offset) + 1
        col = offset - (text.rfind("\n", 0, offset) + 1) + 1
        reason = getattr(exc, "reason", "malformed")
        raise InvalidSpec([f"{label}:{line}:{col}: invalid YAML: {reason}"]) from None
    return node


# --- checking -----------------------------------------------------------------------------------------------


def _check_version(doc: _Reader, label: str) -> None:
    if not isinstance(doc.data, dict):
        got = "an empty file" if doc.data is None else _describe(doc.data)
        raise InvalidSpec([f"{label}:1:1: the spec must be a mapping of keys to values, got {got}"])
    version = doc.data.get("version")
    if type(version) is int and version == SPEC_VERSION:
        return
    line, col = doc.where("version")
    got = "no version" if "version" not in doc.data else str(version) if type(version) is int else _describe(version)
    raise InvalidSpec([f"{label}:{line}:{col}: version: batchflow supports spec version {SPEC_VERSION}, got {got}"])


@functools.cache
def _validator() -> Draft202012Validator:
    return Draft202012Validator(spec_schema())


def _schema_problems(doc: _Reader) -> list[_Problem]:
    return [p for error in _validator().iter_errors(doc.data) for p in _explain(error, doc)]


def _explain(error: ValidationError, doc: _Reader) -> list[_Problem]:
    """One schema error as problems: at the right line, with the spec's path and a message for a human."""
    dotted = ".".join(str(p) for p in error.absolute_path)
    schema = error.schema if isinstance(error.schema, dict) else {}
    hint = schema.get("errorMessage")
    instance = error.instance
    if error.validator == "additionalProperties" and isinstance(instance, dict):
        allowed = list(schema.get("properties", {}))
        extra = [_join(dotted, k) for k in instance if k not in allowed]
        return [(*doc.where(sub, key=True), sub, _unknown(sub.rpartition(".")[2], allowed)) for sub in extra]
    if error.validator == "required" and isinstance(instance, dict):
        missing = [k for k in error.validator_value if k not in instance]
        return [(*doc.where(dotted, key=True), dotted, hint or f"missing required key '{k}'") for k in missing]
    if error.validator == "not":
        return [(*doc.where(dotted, key=True), dotted, hint or "not allowed here")]
    if hint:
        got = "" if isinstance(instance, dict | list) else f", got {_describe(instance)}"
        return [(*doc.where(dotted, key=isinstance(instance, dict)), dotted, hint + got)]
    if error.context:  # anyOf / oneOf: the branch that came closest says the most
        return _explain(best_match(error.context), doc)
    return [(*doc.where(dotted, key=isinstance(instance, dict)), dotted, _message(error))]


_TYPES = {
    "integer": "an integer",
    "number": "a number",
    "string": "a string",
    "boolean": "true or false",
    "object": "a mapping",
    "array": "a list",
    "null": "null",
}


def _message(error: ValidationError) -> str:
    kind, value, got = error.validator, error.validator_value, _describe(error.instance)
    if kind == "type":
        expected = " or ".join(_TYPES.get(t, t) for t in ([value] if isinstance(value, str) else value))
        return f"expected {expected}, got {got}"
    if kind == "enum":
        close = difflib.get_close_matches(str(error.instance), [str(v) for v in value], 1, 0.6)
        return f"expected one of {', '.join(map(str, value))}; got {got}" + (
            f" (did you mean '{close[0]}'?)" if close else ""
        )
    if kind in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        relation = {"minimum": "at least", "exclusiveMinimum": "more than", "maximum": "at most"}
        return f"expected {relation.get(str(kind), 'less than')} {value}, got {got}"
    if kind in ("minLength", "minItems"):
        return "must not be empty" if value == 1 else f"must have at least {value}, got {got}"
    if kind == "maxLength":
        return f"must be at most {value} characters long"
    if kind == "pattern":
        return f"{got} does not match {value}"
    return str(error.message)


def _unknown(key: str, allowed: list[str]) -> str:
    close = difflib.get_close_matches(key, allowed, 1, 0.6)
    if close:
        return f"unknown key '{key}' (did you mean '{close[0]}'?)"
    return f"unknown key '{key}' (expected one of: {', '.join(allowed)})"


def _describe(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return "null" if value is None else str(value).lower()
    if isinstance(value, int | float):
        return f"{'integer' if isinstance(value, int) else 'number'} {value}"
    if isinstance(value, str):
        return f"string {value if len(value) <= 40 else value[:37] + '...'!r}"
    return "a mapping" if isinstance(value, dict) else "a list" if isinstance(value, list) else type(value).__name__


def _format(label: str, problem: _Problem) -> str:
    line, col, dotted, message = problem
    return f"{label}:{line}:{col}: {dotted}: {message}" if dotted else f"{label}:{line}:{col}: {message}"


# --- typing -------------------------------------------------------------------------------------------------

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_TEMPLATES = ("key", "prompt", "system", "generation_config", "request", "content", "embed_config")


def _resolve(path: str | None, base: Path) -> str | None:
    """A relative local path is relative to the spec's directory; URLs and absolute paths stay as written."""
    if path is None or _URL.match(path):
        return path
    return os.path.normpath(os.path.join(base, os.path.expanduser(path)))


def _to_spec(path: Path, label: str, doc: _Reader) -> Spec:
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
            }
        ),
        state_dir=Path(_resolve(data.get("state", {}).get("dir", ".batchflow"), base) or base),
        jobs=JobsSpec(
            max_requests=jobs.get("max_requests"),
            max_bytes=None if "max_bytes" not in jobs else parse_size(jobs["max_bytes"]),
            max_concurrent=jobs.get("max_concurrent", JobsSpec.max_concurrent),
            poll_interval=parse_duration(jobs.get("poll_interval", JobsSpec.poll_interval)),
        ),
        retry=_retry(retry),
        locations={k: f"{label}:{line}:{col}" for k, (line, col) in doc.values.items() if k},
        raw=data,
        **{k: data[k] for k in _TEMPLATES if k in data},
    )


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
        backoff=BackoffSpec(
            initial=parse_duration(backoff.get("initial", defaults.initial)),
            max=parse_duration(backoff.get("max", defaults.max)),
            multiplier=float(backoff.get("multiplier", defaults.multiplier)),
        ),
    )
