"""The destinations by name: the registry of ``destinations/``, apart from the contract (``base.py``)."""

from __future__ import annotations

from collections.abc import Callable

from batchflow.destinations.base import Destination
from batchflow.destinations.bigquery import BigQueryDestination
from batchflow.destinations.files import FilesDestination
from batchflow.errors import SpecError
from batchflow.spec.spec import OutputSpec

DestinationFactory = Callable[[OutputSpec], Destination]


def open_destination(spec: OutputSpec) -> Destination:
    """The destination ``spec`` describes; ``SpecError`` for a type not built (yet)."""
    try:
        factory = DESTINATIONS[spec.type]
    except KeyError:
        known = ", ".join(sorted(DESTINATIONS))
        raise SpecError(f"output.type {spec.type!r} is not supported (supported: {known})") from None
    return factory(spec)



DESTINATIONS: dict[str, DestinationFactory] = {"files": FilesDestination, "bigquery": BigQueryDestination}
