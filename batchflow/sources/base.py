"""Sources: where the records come from, looked up by ``source.type`` in ``SOURCES``.

A source yields ``SourceRecord``s in input order. ``ordinal`` is 1-based and counts the records *yielded*.
(``prepare`` numbers the records itself: there a record skipped under ``on_bad_record: skip`` takes its ordinal
and gets an error row at its place.) ``where`` names the
record the way the user would find it: ``data/reviews-2.jsonl:17`` (line, counting blank lines),
``data/x.csv:5`` (the line the row starts on), ``data/x.json[3]`` (1-based element), ``inline[3]`` (1-based).

This is the contract; the implementations live beside it and ``registry.py`` looks them up by name.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from batchflow.errors import DataError, SpecError

Reject = Callable[[str, str, bytes], None]
"""Called with (where, reason, raw bytes) for each bad record skipped under ``on_bad_record: skip``."""


Item = tuple[dict[str, Any], bytes | None, str, int]
"""A record as ``Source.items`` yields it: ``(record, raw, place, line)``, the fields of ``SourceRecord`` bar the
ordinal (the count of items so far). A plain tuple, because a prep reads millions: a ``SourceRecord`` built per
record, with its ordinal, cost ~0.3 µs a record (~10 % of a prep), and the hot loop needs neither."""


def where(place: str, line: int) -> str:
    """"data/reviews-2.jsonl:17", "data/x.json[3]", "inline[3]": the place, with the line when there is one."""
    return f"{place}:{line}" if line else place


# Not frozen, and ``where`` formatted only when asked for: both cost ~0.25 µs a record, and a large input has
# millions of records (a frozen dataclass's __init__ calls object.__setattr__ per field).
@dataclass(slots=True)
class SourceRecord:
    ordinal: int  # 1-based, over the records yielded (skipped bad records take none)
    place: str  # ``where`` itself, or the file's name when ``line`` is given
    record: dict[str, Any]
    line: int = 0
    raw: bytes | None = None  # the JSON text the record was parsed from, when it was (a JSON Lines line)

    @property
    def where(self) -> str:
        return where(self.place, self.line)


class Source(ABC):
    @abstractmethod
    def items(self, unparsed: bool = False) -> Iterator[Item]:
        """The records as ``Item`` tuples, in input order; raises ``DataError`` on a bad record unless it is
        skipped. ``unparsed``: a source that reads JSON Lines may yield ``(None, raw, place, line)`` and leave the
        parse (``sources.files.parse_line``) to the caller."""

    def records(self) -> Iterator[SourceRecord]:
        """The records, numbered: the ordinal is 1-based, over the records yielded."""
        for ordinal, (record, raw, place, line) in enumerate(self.items(), start=1):
            yield SourceRecord(ordinal, place, record, line, raw)

    @abstractmethod
    def fingerprint(self) -> str:
        """A cheap identity of the input as it is now, to notice it changed between runs."""

    def content_digest(self) -> str:
        """The identity of what ``items`` read, once it has read everything (a source whose records are not bytes
        it reads says ``fingerprint``)."""
        return self.fingerprint()

    @abstractmethod
    def describe(self) -> str:
        """One line for humans, e.g. "3 files matching data/reviews-*.jsonl"."""


BadRecord = Callable[[str, str, bytes], None]
"""What a reader calls for a bad record: raises under ``fail``, reports to ``Reject`` under ``skip``."""


def bad_record_handler(policy: str, reject: Reject | None) -> BadRecord:
    """The handler for ``source.on_bad_record``."""
    try:
        make = _POLICIES[policy]
    except KeyError:
        known = ", ".join(sorted(_POLICIES))
        raise SpecError(f"source.on_bad_record: unknown value {policy!r} (expected: {known})") from None
    return make(reject)


def _fail(_reject: Reject | None) -> BadRecord:
    def fail(where: str, reason: str, raw: bytes) -> None:
        raise DataError(f"{where}: {reason}")

    return fail


def _skip(reject: Reject | None) -> BadRecord:
    def skip(where: str, reason: str, raw: bytes) -> None:
        if reject is not None:
            reject(where, reason, raw)

    return skip


_POLICIES: dict[str, Callable[[Reject | None], BadRecord]] = {"fail": _fail, "skip": _skip}
