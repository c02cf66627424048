"""The ``inline`` source: records written in the spec itself (``where`` is ``inline[N]``, 1-based)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from typing import Any

from batchflow.errors import SpecError
from batchflow.libs.jsonio import dumps, dumps_canonical, type_name
from batchflow.sources.base import Item, Reject, Source, bad_record_handler
from batchflow.spec.spec import SourceSpec


class InlineSource(Source):
    """The records of ``source.records``, in the order written."""

    def __init__(self, spec: SourceSpec, reject: Reject | None = None) -> None:
        if spec.records is None:
            raise SpecError("source.records is required for source type 'inline'")
        self._records: tuple[Any, ...] = spec.records
        self._bad = bad_record_handler(spec.on_bad_record, reject)

    def items(self, unparsed: bool = False) -> Iterator[Item]:
        for index, record in enumerate(self._records, start=1):
            if not isinstance(record, Mapping):
                self._bad(f"inline[{index}]", f"expected an object, got {type_name(record)}", dumps(record))
                continue
            yield dict(record), None, f"inline[{index}]", 0

    def fingerprint(self) -> str:
        return hashlib.sha256(dumps_canonical(self._records)).hexdigest()

    def describe(self) -> str:
        count = len(self._records)
        return f"{count} inline {'record' if count == 1 else 'records'}"
