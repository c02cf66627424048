"""Destinations: where the output rows go, looked up by ``output.type`` in ``DESTINATIONS``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol

from batchflow.errors import SpecError
from batchflow.spec import OutputSpec

Rows = Callable[[], Iterator[dict[str, Any]]]
"""Makes the output rows; every call yields the same rows again, so a destination may take several passes."""


class Destination(Protocol):
    def check(self) -> None:
        """Fail now, before anything is spent, if the output could not be written later."""
        ...

    def write(self, rows: Rows) -> int:
        """Write every row, replacing what was there only once all are written; return how many."""
        ...


DestinationFactory = Callable[[OutputSpec], Destination]


def open_destination(spec: OutputSpec) -> Destination:
    """The destination ``spec`` describes; ``SpecError`` for a type not built (yet)."""
    try:
        factory = DESTINATIONS[spec.type]
    except KeyError:
        known = ", ".join(sorted(DESTINATIONS))
        raise SpecError(f"output.type {spec.type!r} is not supported (supported: {known})") from None
    return factory(spec)


# The implementations import the types above, so they are registered after them.
from batchflow.destinations.bigquery import BigQueryDestination  # noqa: E402
from batchflow.destinations.files import FilesDestination  # noqa: E402

DESTINATIONS: dict[str, DestinationFactory] = {"files": FilesDestination, "bigquery": BigQueryDestination}

__all__ = ["DESTINATIONS", "BigQueryDestination", "Destination", "FilesDestination", "Rows", "open_destination"]
