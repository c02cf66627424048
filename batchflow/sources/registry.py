"""The sources by name: the registry of ``sources/``, apart from the contract (``base.py``)."""

from __future__ import annotations

from collections.abc import Callable

from batchflow.errors import SpecError
from batchflow.sources.base import Reject, Source
from batchflow.sources.bigquery import BigQuerySource
from batchflow.sources.files import FilesSource
from batchflow.sources.inline import InlineSource
from batchflow.spec.spec import SourceSpec

SourceFactory = Callable[[SourceSpec, Reject | None], Source]


def open_source(spec: SourceSpec, reject: Reject | None = None) -> Source:
    """The source ``spec`` describes; ``SpecError`` for a type not built (yet)."""
    try:
        factory = SOURCES[spec.type]
    except KeyError:
        known = ", ".join(sorted(SOURCES))
        raise SpecError(f"source.type {spec.type!r} is not supported (supported: {known})") from None
    return factory(spec, reject)



SOURCES: dict[str, SourceFactory] = {"files": FilesSource, "inline": InlineSource, "bigquery": BigQuerySource}
