"""Backends behind one Protocol, looked up by the spec's ``backend.type``.

This is the contract; the implementations live beside it and ``registry.py`` looks them up by name.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol

# The backend's job states (either API's spelling, prefix stripped) -> the state file's job status.
_STATUS = {
    "QUEUED": "submitted", "PENDING": "submitted",
    "RUNNING": "running", "CANCELLING": "running", "PAUSED": "running", "UPDATING": "running",
    "SUCCEEDED": "succeeded", "PARTIALLY_SUCCEEDED": "succeeded",
    "FAILED": "failed", "EXPIRED": "expired", "CANCELLED": "cancelled",
}


def service_state(state: str) -> str:
    """``JOB_STATE_X`` / ``BATCH_STATE_X`` -> ``X``: the service's word, the same on either API."""
    return state.rsplit("_STATE_", 1)[-1]


def job_status(state: str) -> str:
    """Map ``JOB_STATE_X`` / ``BATCH_STATE_X`` / ``X`` to a job status; unknown states count as running."""
    return _STATUS.get(service_state(state), "running")


@dataclass(frozen=True)
class JobInfo:
    name: str
    display_name: str | None
    status: str  # a job status of the state file (submitted, running, succeeded, failed, ...)
    error: str | None = None
    output: str | None = None  # files/... or gs://dir: where the results are
    done: int | None = None  # requests the service reports finished (ok or failed), when it reports that
    state: str | None = None  # the job's state as the service spells it, prefix stripped (SUCCEEDED, PENDING, ...)


class Result(NamedTuple):
    """One request's outcome as a backend reported it; ``key`` is None when it could not be matched. (A tuple: a
    collection makes one a line, and a frozen dataclass took 0.6 µs to make, a tuple 0.3.)"""

    key: str | None
    response: dict[str, Any] | None
    error: dict[str, Any] | None
    line: bytes | None = None  # the output's line itself when it is a result line as collected, written as it is
    key_json: bytes | None = None  # the key as JSON text, when the reader made it (not to be kept: jsonio.dumps_kept)


class MediaStaging(NamedTuple):
    """What staging a generation's local media would do (``plan``): distinct contents to upload, already staged
    where the backend reads them (and alive long enough), and sent inline in their requests; each files, bytes."""

    upload_files: int = 0
    upload_bytes: int = 0
    staged_files: int = 0
    staged_bytes: int = 0
    inline_files: int = 0
    inline_bytes: int = 0

    def as_dict(self) -> dict[str, int]:
        return self._asdict()


@dataclass(frozen=True)
class Stored:
    """Something a spec's runs left at the service that batchflow alone made and the user's storage holds: a
    job's request lines (``job``: its display name) or a media upload (``content``: the leading hex digits of its
    sha256, as its display name carries them). ``ref`` is what ``delete_stored`` takes."""

    ref: str
    kind: str  # "request lines" | "media" | "predictions" (a Vertex job's output, every file under its prefix)
    job: str | None = None
    content: str | None = None
    size: int | None = None  # bytes, where the listing says
    holds_answers: bool = False  # the job's answers are read from it: deleted only once they are collected


class Backend(Protocol):
    """What the runner needs of a batch API. Every method may raise TransientError or BackendError."""

    poll_interval_cap: float | None  # a backend whose jobs finish in moments asks to be polled sooner

    def stage(self, path: Path, display_name: str) -> str:
        """Upload a job's request lines; return what ``create`` takes as input."""
        ...

    def staged_files(self, prefix: str) -> dict[str, tuple[str, int]]:
        """What ``stage`` left at the service under display names starting with ``prefix``: by display name, (the
        reference ``stage`` returned, its size in bytes, or -1 where it is not the size of the file staged)."""
        ...

    def delete_staged(self, staged: str) -> None:
        """Delete what ``stage`` returned (nothing created from it will run)."""
        ...

    def create(self, model: str, task: str, staged: str, display_name: str) -> JobInfo:
        """Create a job. Never retried blindly: the runner adopts by display name instead."""
        ...

    def find(self, display_name: str) -> JobInfo | None:
        """The job of that display name, if one was created."""
        ...

    def find_many(self, display_names: set[str]) -> dict[str, JobInfo]:
        """The jobs of these display names that were created, by display name, in one paged list."""
        ...

    def poll(self, names: Sequence[str]) -> dict[str, JobInfo]:
        """The current state of these jobs, in as few calls as the API allows."""
        ...

    def results(self, job: JobInfo, workdir: Path, sent: Path) -> Iterator[Result]:
        """Every result line of a finished job; ``sent`` is the job's input (``{"key","request"}`` lines)."""
        ...

    def cancel(self, name: str) -> None: ...

    def billed_requests(self, path: Path) -> int:
        """How many requests of a unit's request file (``{"key","request"}`` lines) the service answers and bills:
        each line on the Gemini API (one answer a key), each distinct request on Vertex (staged once)."""
        ...

    def model_problem(self, model: str, task: str) -> str | None:
        """Why the service would not run this model's batch jobs (one ``models.get``); None if it would."""
        ...

    def media_staging(self, contents: dict[str, tuple[str, int]]) -> MediaStaging:
        """Where these local contents (sha256 -> (file, bytes)) stand: to upload, staged already, or inline."""
        ...

    def job_media_done(self, display_name: str) -> int:
        """The job of that display name is collected: delete the media staged for it that no other staged job
        reads (room for the next wave under the Files API's storage quota); how many."""
        ...

    def release_media(self) -> int:
        """Delete the media files staged for this spec's jobs, once every one of them is collected; how many."""
        ...

    def stored(self, spec_name: str) -> list[Stored]:
        """What this spec's runs staged at the service and left there (``batchflow cleanup``), in one listing:
        found by the names batchflow gives them, so nothing another tool or spec made is among them."""
        ...

    def media_read(self, path: Path) -> set[str] | None:
        """The sha256 of every staged media content a unit's request lines make its job read; None when that
        cannot be told from the lines (a gs:// object copied through: its bytes' digest is known once read)."""
        ...

    def delete_stored(self, stored: Stored) -> None:
        """Delete one thing ``stored`` found; one already gone is no error."""
        ...

    def close(self) -> None: ...
