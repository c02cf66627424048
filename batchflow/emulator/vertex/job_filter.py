"""List filters of Vertex AI's `batchPredictionJobs.list`, bound to jobs.

List filters are AIP-160 (parsed by `filter_parser.py`) on exactly the fields the list method documents (its `filter`
parameter in Vertex AI's discovery document, and `ListBatchPredictionJobsRequest.filter` in
google-cloud-aiplatform): `display_name` (`=`, `!=`, `:` with `*` wildcards), `model_display_name` and `state`
(`=`, `!=`), `create_time` (`= != < <= > >=` on RFC 3339 times), `labels.KEY=value` and `labels.KEY:*`. Any other
field or comparator is a 400 INVALID_ARGUMENT, as the service answers it.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from datetime import datetime

from batchflow.emulator.jobs.store import rfc3339
from batchflow.emulator.vertex import filter_parser as filters
from batchflow.emulator.vertex.engine import JobFilter
from batchflow.emulator.vertex.jobs import JOB_STATES, VertexJob
from batchflow.emulator.wire.errors import invalid_argument

_Test = Callable[[tuple[VertexJob, str]], bool]
_EQUALITY = frozenset({"=", "!="})
_ORDER: dict[str, Callable[[int, int], bool]] = {
    "=": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
}
_RFC3339 = re.compile(r"(?P<seconds>\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2})(?:\.(?P<fraction>\d{1,9}))?"
                      r"(?P<offset>[Zz]|[+-]\d{2}:\d{2})")


def parse_filter(text: str) -> JobFilter:
    """A predicate over (job, visible state) for a list filter; 400 for one the service would refuse."""
    test = filters.compile_filter(filters.parse(text), _bind)
    return lambda job, state: test((job, state))


def _bind(restriction: filters.Restriction) -> _Test:
    """The test of one `field comparator value`; 400 for a field or comparator the list does not document."""
    name = restriction.member
    field = "labels.KEY" if name.startswith("labels.") else name
    if field not in _FIELDS:
        raise invalid_argument(f"Unsupported field {name!r} in filter; supported fields are "
                               f"{', '.join(sorted(_FIELDS))}.")
    comparators, bind = _FIELDS[field]
    if restriction.comparator not in comparators:
        raise invalid_argument(f"Unsupported comparator {restriction.comparator!r} for field {name!r} in filter; "
                               f"{field} supports {' '.join(sorted(comparators))}.")
    return bind(restriction)


def _display_name(restriction: filters.Restriction) -> _Test:
    return _text_test(restriction, lambda job, state: job.display_name)


def _model_display_name(restriction: filters.Restriction) -> _Test:
    """A publisher model has no Model resource, hence no display name of its own: its id stands for it."""
    return _text_test(restriction, lambda job, state: job.model.rsplit("/", 1)[-1])


def _state(restriction: filters.Restriction) -> _Test:
    if restriction.value not in JOB_STATES:
        raise invalid_argument(f"Invalid value {restriction.value!r} for state in filter; expected a JobState name "
                               "such as JOB_STATE_SUCCEEDED.")
    return _text_test(restriction, lambda job, state: f"JOB_STATE_{state}")


def _create_time(restriction: filters.Restriction) -> _Test:
    """Times are compared as times; a job's is the `createTime` its resource shows (to the microsecond)."""
    bound = _nanos(restriction.value)
    if bound is None:
        raise invalid_argument(f"Invalid value {restriction.value!r} for create_time in filter; expected an RFC 3339 "
                               "timestamp such as \"2021-05-18T00:00:00Z\".")
    compare = _ORDER[restriction.comparator]
    return lambda seen: compare(_shown_nanos(seen[0].create_time), bound)


def _label_is_set(restriction: filters.Restriction) -> _Test:
    """`labels:KEY`: the label is set."""
    key = restriction.value
    return lambda seen: key in (seen[0].labels or {})


def _label_value(restriction: filters.Restriction) -> _Test:
    """`labels.KEY=value`, `!=`, and `labels.KEY:pattern` (`labels.KEY:*`: the label is set, to anything)."""
    key = restriction.member.removeprefix("labels.")
    return _text_test(restriction, lambda job, state: (job.labels or {}).get(key))


def _text_test(restriction: filters.Restriction, read: Callable[[VertexJob, str], str | None]) -> _Test:
    """`=` and `!=` compare whole values; `:` matches `*` wildcards, and never an unset value."""
    value = restriction.value
    if restriction.comparator == "=":
        return lambda seen: read(*seen) == value
    if restriction.comparator == "!=":
        return lambda seen: read(*seen) != value

    def has(seen: tuple[VertexJob, str]) -> bool:
        found = read(*seen)
        return found is not None and filters.wildcard_match(value, found)

    return has


def _shown_nanos(epoch: float) -> int:
    """A job time as its resource shows it (microseconds, rounded as `rfc3339` rounds), in nanoseconds."""
    return _nanos(rfc3339(epoch)) or 0


def _nanos(text: str) -> int | None:
    """Nanoseconds since the epoch of an RFC 3339 timestamp (the finest it can say); None if it is not one."""
    found = _RFC3339.fullmatch(text)
    if found is None:
        return None
    try:
        moment = datetime.fromisoformat(found["seconds"] + (found["offset"].upper().replace("Z", "+00:00")))
    except ValueError:
        return None
    return int(moment.timestamp()) * 1_000_000_000 + int((found["fraction"] or "").ljust(9, "0"))


_FIELDS: dict[str, tuple[frozenset[str], Callable[[filters.Restriction], _Test]]] = {
    "display_name": (_EQUALITY | {":"}, _display_name),
    "model_display_name": (_EQUALITY, _model_display_name),
    "state": (_EQUALITY, _state),
    "create_time": (filters.COMPARATORS - {":"}, _create_time),
    "labels": (frozenset({":"}), _label_is_set),
    "labels.KEY": (_EQUALITY | {":"}, _label_value),
}
