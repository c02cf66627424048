"""The seam where a seeded fault plan will plug in (`batchflow emulator --faults FILE`).

The engine asks the plan at exactly two points: once per HTTP request before it is dispatched, and once per
job when its outcome is decided. Until plans are implemented, `NoFaults` answers "no fault" everywhere.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Protocol

from batchflow.emulator.errors import ApiError


class FaultPlan(Protocol):
    """What a fault plan decides; every answer must be reproducible from the plan's seed."""

    def request_fault(self, endpoint: str) -> ApiError | None:
        """An error to answer instead of dispatching a call to `endpoint` (e.g. 429/500/503), or None."""

    def job_outcome(self, job_id: str, display_name: str | None) -> str | None:
        """A final state to force on a due job (FAILED, EXPIRED) or STALL to keep it running, or None."""


class NoFaults:
    """The plan used when none is given: everything works."""

    def request_fault(self, endpoint: str) -> ApiError | None:
        """Never an error."""
        return None

    def job_outcome(self, job_id: str, display_name: str | None) -> str | None:
        """Never a forced outcome."""
        return None


def load_faults(path: Path | None) -> FaultPlan:
    """The fault plan in `path`; fault plans are not implemented yet, so a given plan is reported and ignored."""
    if path is not None:
        print(f"batchflow emulator: fault plans are not supported yet; ignoring {path}", file=sys.stderr)
    return NoFaults()
