"""A fault plan file's content, checked: `parse_plan(raw, where) -> PlanConfig` (format: see plan.py)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from batchflow.errors import InputError
from batchflow.spec.units import parse_duration

# Google's canonical mapping of HTTP codes to google.rpc statuses, with the messages its APIs send.
MESSAGES = {
    400: ("INVALID_ARGUMENT", "Request contains an invalid argument."),
    401: ("UNAUTHENTICATED", "Request had invalid authentication credentials."),
    403: ("PERMISSION_DENIED", "The caller does not have permission."),
    404: ("NOT_FOUND", "Requested entity was not found."),
    409: ("ABORTED", "The operation was aborted."),
    429: ("RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."),
    499: ("CANCELLED", "The operation was cancelled."),
    500: ("INTERNAL", "An internal error has occurred. Please retry or report in "
                      "https://developers.generativeai.google/guide/troubleshooting"),
    501: ("UNIMPLEMENTED", "Operation is not implemented, or supported, or enabled."),
    503: ("UNAVAILABLE", "The service is currently unavailable."),
    504: ("DEADLINE_EXCEEDED", "Deadline expired before operation could complete."),
}
DEFAULT_CODES = (429, 500, 503)
_SECTIONS = {"seed", "http", "hangs", "jobs", "requests", "output", "quota", "access"}
HANG_KINDS = ("hang", "stall_body", "stall_upload")  # see plan.py: what a hung call sends before it stops
# jobs.<key> -> the job fault it sets (a share or a count); fail_first_attempt is fail's older name
_JOB_KEYS = {"fail": "fail", "fail_first_attempt": "fail", "expire": "expire", "stall": "stall", "stuck": "stuck",
             "late_output": "late_output", "output_gone": "output_gone", "cancel_delivers": "cancel_delivers",
             "cancelling_succeeds": "cancelling_succeeds"}
_JOB_DURATIONS = {"expire_after", "cancelling_seconds"}
_REQUEST_KEYS = {"fail", "codes", "blocked", "max_tokens"}
_OUTPUT_KEYS = {"drop", "duplicate", "late_seconds", "retention", "reserialise_echo", "drop_labels"}
_QUOTA_KEYS = {"enqueued_tokens", "concurrent_batches", "file_storage_bytes"}
_ACCESS_KEYS = {"unreadable_buckets"}


class FaultPlanError(InputError):
    """A fault plan file that cannot be read or does not follow the format (the CLI exits 2)."""


@dataclass(frozen=True)
class HttpRule:
    """How calls of one endpoint (family) fail."""

    rate: float
    codes: tuple[int, ...] = DEFAULT_CODES
    after: bool = False


@dataclass(frozen=True)
class HangRule:
    """Which calls of one endpoint (family) stop answering, and how: each call drawn against `rate`, and the
    call numbers in `calls` (1 = the first call of that endpoint) always."""

    kind: str
    rate: float = 0.0
    calls: frozenset[int] = frozenset()


@dataclass(frozen=True)
class Service:
    """How the service behaves whatever is drawn: its time limits, quotas and the shape of its output.

    Without a plan these are the defaults, so a plain emulator already cancels Vertex jobs through CANCELLING and
    re-serialises Vertex's echo, as the service does.
    """

    expire_after: float | None = None  # None: each surface's own limits (see plan.py)
    cancelling_seconds: float = 0.2
    late_seconds: float = 1.0
    retention: float = 2.0
    enqueued_tokens: int | None = None
    concurrent_batches: int | None = None
    file_storage_bytes: int | None = None  # the Files API's storage per project (Google's: 20 GiB)
    reserialise_echo: bool = True
    drop_labels: bool = False
    # Cloud Storage buckets the project's Vertex AI service agent may not read (access.unreadable_buckets)
    unreadable_buckets: frozenset[str] = frozenset()


@dataclass(frozen=True)
class PlanConfig:
    """A parsed plan file."""

    seed: int = 0
    http: Mapping[str, HttpRule] = field(default_factory=dict)
    hangs: Mapping[str, HangRule] = field(default_factory=dict)
    jobs: Mapping[str, float | int] = field(default_factory=dict)  # a job fault (see _JOB_KEYS): a share or a count
    line_fail: float = 0.0
    line_codes: tuple[int, ...] = DEFAULT_CODES
    blocked: float = 0.0
    max_tokens: float = 0.0
    drop: float = 0.0
    duplicate: float = 0.0
    service: Service = field(default_factory=Service)


def parse_plan(raw: Any, where: str) -> PlanConfig:
    """Check a loaded plan file; raises FaultPlanError as `where: path.to.key: what is wrong`."""
    if raw is None:
        return PlanConfig()
    doc = _mapping(raw, where, "", _SECTIONS)
    seed = doc.get("seed", 0)
    if not _is_int(seed):
        raise _error(where, "seed", f"must be an integer, got {seed!r}")
    requests = _mapping(doc.get("requests") or {}, where, "requests", _REQUEST_KEYS)
    output = _mapping(doc.get("output") or {}, where, "output", _OUTPUT_KEYS)
    jobs = _mapping(doc.get("jobs") or {}, where, "jobs", set(_JOB_KEYS) | _JOB_DURATIONS)
    return PlanConfig(
        seed=seed, http=_http(doc.get("http") or {}, where), hangs=_hangs(doc.get("hangs") or {}, where),
        jobs=_jobs({k: v for k, v in jobs.items() if k in _JOB_KEYS}, where),
        line_fail=_share(requests.get("fail", 0), where, "requests.fail"),
        line_codes=_codes(requests.get("codes", DEFAULT_CODES), where, "requests.codes"),
        blocked=_share(requests.get("blocked", 0), where, "requests.blocked"),
        max_tokens=_share(requests.get("max_tokens", 0), where, "requests.max_tokens"),
        drop=_share(output.get("drop", 0), where, "output.drop"),
        duplicate=_share(output.get("duplicate", 0), where, "output.duplicate"),
        service=_service(jobs, output, _mapping(doc.get("quota") or {}, where, "quota", _QUOTA_KEYS),
                         _mapping(doc.get("access") or {}, where, "access", _ACCESS_KEYS), where))


def _service(jobs: dict[str, Any], output: dict[str, Any], quota: dict[str, Any], access: dict[str, Any],
             where: str) -> Service:
    default = Service()
    expire_after = jobs.get("expire_after")
    return Service(
        expire_after=None if expire_after is None else _duration(expire_after, where, "jobs.expire_after"),
        cancelling_seconds=_duration(jobs.get("cancelling_seconds", default.cancelling_seconds), where,
                                     "jobs.cancelling_seconds"),
        late_seconds=_duration(output.get("late_seconds", default.late_seconds), where, "output.late_seconds"),
        retention=_duration(output.get("retention", default.retention), where, "output.retention"),
        enqueued_tokens=_limit(quota.get("enqueued_tokens"), where, "quota.enqueued_tokens"),
        concurrent_batches=_limit(quota.get("concurrent_batches"), where, "quota.concurrent_batches"),
        file_storage_bytes=_limit(quota.get("file_storage_bytes"), where, "quota.file_storage_bytes"),
        reserialise_echo=_bool(output.get("reserialise_echo", default.reserialise_echo), where,
                               "output.reserialise_echo"),
        drop_labels=_bool(output.get("drop_labels", default.drop_labels), where, "output.drop_labels"),
        unreadable_buckets=_buckets(access.get("unreadable_buckets", []), where, "access.unreadable_buckets"))


def _buckets(raw: Any, where: str, path: str) -> frozenset[str]:
    if isinstance(raw, list) and all(isinstance(b, str) and b and "/" not in b for b in raw):
        return frozenset(raw)
    uris = [b for b in raw if isinstance(b, str) and b.startswith("gs://")] if isinstance(raw, list) else []
    hint = f" (a bucket's name, not a URI: {uris[0][5:].split('/', 1)[0]!r})" if uris else ""
    raise _error(where, path, f"must be a list of bucket names, got {raw!r}{hint}")


def _http(raw: Any, where: str) -> dict[str, HttpRule]:
    rules = {}
    for name, value in _mapping(raw, where, "http", None).items():
        path = f"http.{name}"
        rule = _mapping(value, where, path, {"rate", "codes", "after"})
        if "rate" not in rule:
            raise _error(where, path, "rate is required")
        rules[str(name)] = HttpRule(_share(rule["rate"], where, f"{path}.rate"),
                                    _codes(rule.get("codes", DEFAULT_CODES), where, f"{path}.codes"),
                                    _bool(rule.get("after", False), where, f"{path}.after"))
    return rules


def _hangs(raw: Any, where: str) -> dict[str, HangRule]:
    rules = {}
    for name, value in _mapping(raw, where, "hangs", None).items():
        path = f"hangs.{name}"
        rule = _mapping(value, where, path, {"kind", "rate", "calls"})
        kind = rule.get("kind")
        if kind not in HANG_KINDS:
            raise _error(where, f"{path}.kind", f"must be one of {', '.join(HANG_KINDS)}, got {kind!r}")
        if "rate" not in rule and "calls" not in rule:
            raise _error(where, path, "rate or calls is required")
        calls = rule.get("calls", [])
        if not isinstance(calls, list | tuple) or not all(_is_int(n) and n >= 1 for n in calls):
            raise _error(where, f"{path}.calls", f"must be a list of call numbers from 1, got {calls!r}")
        rules[str(name)] = HangRule(kind, _share(rule.get("rate", 0), where, f"{path}.rate"), frozenset(calls))
    return rules


def _jobs(raw: dict[str, Any], where: str) -> dict[str, float | int]:
    jobs: dict[str, float | int] = {}
    for key, value in raw.items():
        kind = _JOB_KEYS[key]
        if kind in jobs:
            raise _error(where, f"jobs.{key}", f"jobs.{kind} is given twice (fail_first_attempt is its alias)")
        if isinstance(value, bool):
            jobs[kind] = 1.0 if value else 0.0  # true: every job, false: none
        elif _is_int(value) and value >= 0:
            jobs[kind] = value  # a count: the first N jobs decided
        else:
            jobs[kind] = _share(value, where, f"jobs.{key}")
    return jobs


def _mapping(raw: Any, where: str, path: str, allowed: set[str] | None) -> dict[str, Any]:
    if not isinstance(raw, Mapping):
        raise _error(where, path or "(top level)", f"must be a mapping, got {type(raw).__name__}")
    unknown = sorted(str(k) for k in raw if allowed is not None and k not in allowed)
    if unknown:
        prefix = f"{path}." if path else ""
        raise _error(where, prefix + unknown[0], f"unknown key (expected one of {', '.join(sorted(allowed or ()))})")
    return dict(raw)


def _share(value: Any, where: str, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise _error(where, path, f"must be a number between 0 and 1, got {value!r}")
    return float(value)


def _duration(value: Any, where: str, path: str) -> float:
    try:
        seconds = parse_duration(value) if isinstance(value, int | float | str) else -1.0
    except ValueError:
        seconds = -1.0
    if seconds < 0:
        raise _error(where, path, f"must be a duration (seconds, or e.g. '2s', '500ms', '48h'), got {value!r}")
    return seconds


def _limit(value: Any, where: str, path: str) -> int | None:
    if value is not None and not (_is_int(value) and value > 0):
        raise _error(where, path, f"must be a positive integer, got {value!r}")
    return int(value) if value is not None else None


def _bool(value: Any, where: str, path: str) -> bool:
    if not isinstance(value, bool):
        raise _error(where, path, f"must be true or false, got {value!r}")
    return value


def _codes(value: Any, where: str, path: str) -> tuple[int, ...]:
    if not isinstance(value, list | tuple) or not value:
        raise _error(where, path, f"must be a non-empty list of HTTP codes, got {value!r}")
    for code in value:
        if not _is_int(code) or code not in MESSAGES:
            raise _error(where, path, f"{code!r} is not one of {', '.join(map(str, MESSAGES))}")
    return tuple(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _error(where: str, path: str, message: str) -> FaultPlanError:
    return FaultPlanError(f"{where}: {path}: {message}")
