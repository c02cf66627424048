"""The contract of an execution path: what each step of a run does with records, shards and results.

The paths implement it (``shards_path.py``, ``native_path.py``); the registry that picks one is ``paths.py``, so no
path ever imports the registry.

The ``Runner`` (``runner.py``) owns everything the paths share: the lock, the state, the plan, the "submitting
before create" rule, adoption, polling, retry bookkeeping and backoff. A path owns what touches the records:

- ``shards`` (``shards_path.py``), the default: records read by batchflow, rendered into shard files, jobs staged,
  results collected and merged locally;
- ``bigquery-native`` (``native_path.py``), ``source.native: true``: requests built, run and joined inside BigQuery, no
  record passing through batchflow.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from batchflow.backends.base import JobInfo, Stored
from batchflow.errors import CallTimedOut
from batchflow.state.state import Job, Shard, State

if TYPE_CHECKING:
    from batchflow.answers.earlier import Earlier


class JobClient(Protocol):
    """The job calls the runner makes itself; every backend has them."""

    poll_interval_cap: float | None

    def find(self, display_name: str) -> JobInfo | None: ...

    def find_many(self, display_names: set[str]) -> dict[str, JobInfo]: ...

    def poll(self, names: Sequence[str]) -> dict[str, JobInfo]: ...

    def cancel(self, name: str) -> None: ...

    def model_problem(self, model: str, task: str) -> str | None:
        """Why the service will not run the model's batch jobs (asked with ``models.get``), or None."""

    def stored(self, spec_name: str) -> list[Stored]:
        """What the spec's runs staged and left at the service (``batchflow cleanup``)."""
        ...

    def media_read(self, path: Path) -> set[str] | None: ...

    def delete_stored(self, stored: Stored) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class NextJob:
    """The input of a shard's next job: the requests that still need an answer."""

    input: str  # relative to the state dir (shards) or a table (native)
    count: int
    digest: str
    file: str | None = None  # already staged (a table the backend reads as it is)


class ExecutionPath(Protocol):
    """What a run does at the steps that touch records; every method may raise Transient/BackendError."""

    recurring: bool
    """Keeps answers per record: a changed input or spec is planned anew from them (else it is refused)."""

    staging_timed_out: CallTimedOut | None
    """An upload that timed out while ``prepare`` staged (its unit is left to the stage step), or None: a hung
    peer the run's last line must name, though the preparation itself went on."""

    @property
    def jobs(self) -> JobClient:
        """The backend's job calls, connected on first use."""
        ...

    def fingerprint(self) -> str:
        """Identity of the requests as the spec (and, on a path that is not ``recurring``, its input) makes them."""
        ...

    def source_stat(self) -> str:
        """A cheap identity of the input as it is now (sizes, versions); DataError when the input is gone."""
        ...

    def check_output(self) -> None:
        """Fail (exit 2) before anything is spent if the output could not be written."""
        ...

    def prepare(self, root: Path, gen: int, earlier: Earlier | None, retry_errors: bool,
                stage: bool = False) -> State:
        """Generation ``gen``: every part and unit made (the caller saves the state); nothing created. ``stage``:
        the units staged too, each as soon as it is written (``run``; nothing staged on a failure)."""
        ...

    def keep(self, state: State) -> dict[str, Any]:
        """Every record's answer kept once the generation's units are settled; returns ``State.answers``."""
        ...

    def stage(self, job: Job) -> str:
        """Put the job's input where the backend reads it; return that reference."""
        ...

    def create(self, shard: Shard, job: Job) -> JobInfo:
        """Create the job (once: the runner adopts instead of retrying)."""
        ...

    def collect(self, shard: Shard, job: Job) -> None:
        """Keep a finished job's results (``job.results``, ``job.ok``, ``job.failed``)."""
        ...

    def collect_lost(self, shard: Shard, job: Job, message: str) -> None:
        """A succeeded job's output that never came or is gone: every request it sent counts as unanswered."""
        ...

    def next_job(self, shard: Shard, n: int) -> NextJob | None:
        """The input of the shard's job ``n``: what still needs an answer within the retry policy; None: done."""
        ...

    def merge(self, state: State) -> tuple[int, int]:
        """Write the output rows; returns (rows, ok)."""
        ...

    def output_name(self) -> str: ...

    def output_exists(self) -> bool: ...

    def finished(self) -> None:
        """Every job of the run is collected: let go of what was staged for them (media files)."""

    def close(self) -> None: ...
