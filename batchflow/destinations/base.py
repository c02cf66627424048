"""Destinations: where the output rows go, looked up by ``output.type`` in ``DESTINATIONS``.

This is the contract; the implementations live beside it and ``registry.py`` looks them up by name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol

Rows = Callable[[], Iterator[dict[str, Any]]]
"""Makes the output rows; every call yields the same rows again, so a destination may take several passes."""


class Destination(Protocol):
    def check(self) -> None:
        """Fail now, before anything is spent, if the output could not be written later."""
        ...

    def write(self, rows: Rows) -> int:
        """Write every row, replacing what was there only once all are written; return how many."""
        ...
