"""The exception tree, sorted by what the caller does next.

Every expected error carries the exit code the CLI maps it to (README.md, "Commands and exit codes"): the CLI prints
``str(exc)`` as one line and exits with ``exc.exit_code``; anything else is a bug and gets a traceback only with
``--debug``.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_WOULD_SUBMIT = 3  # plan --exit-code: run would submit jobs
EXIT_NOT_FINISHED = 75


class BatchflowError(Exception):
    """Base of every error batchflow expects; ``exit_code`` says how the CLI ends, ``label`` how its line starts."""

    exit_code = EXIT_FAILED
    label = "error"


class InputError(BatchflowError):
    """The user must fix something before anything is spent: spec, data or command line."""

    exit_code = EXIT_USAGE


class SpecError(InputError):
    """The spec is malformed, invalid or refers to something that does not exist."""


class DataError(InputError):
    """A source record, a template applied to it, or the key it produced is bad."""


class StateError(InputError):
    """The state directory is corrupt, from a newer version, or was made from another spec."""


class LockedError(BatchflowError):
    """Another run holds the spec's lock: try again later."""

    exit_code = EXIT_NOT_FINISHED
    label = "locked"


class TransientError(BatchflowError):
    """A call may succeed if retried (HTTP 408/429/5xx, connection reset)."""


class QuotaExceeded(TransientError):
    """HTTP 429 RESOURCE_EXHAUSTED: the service's quota (enqueued tokens, concurrent jobs) is full for now. On a
    create it is backpressure: wait for a job to finish, then look the job up by name before creating it."""


class FilesQuotaFull(QuotaExceeded):
    """The media a job's staging would upload do not fit the Files API storage left (``jobs.max_media_bytes``, or
    the service's 429 on an upload): backpressure, the job waits until collected jobs' media are deleted."""


class UnreachableError(TransientError):
    """The batch API cannot be reached (connection refused, no such host): a fault that may not cure itself, so
    the runner gives up on it at once under ``--no-wait`` and after ``UNREACHABLE_FOR`` seconds otherwise."""


UNREACHABLE_FOR = 300.0


class CallTimedOut(TransientError):
    """A remote call had no answer within its deadline, after its retries (libs/deadlines.py): the peer may be
    hung. The run stops as it stands, with exit 75; the next run picks up from the state."""

    exit_code = EXIT_NOT_FINISHED
    label = "timed out"


class DeadlineReached(BatchflowError):
    """The run's own deadline (``run --deadline``) passed: it stops as it stands, the next run picks up."""

    exit_code = EXIT_NOT_FINISHED
    label = "deadline"


class BackendError(BatchflowError):
    """The backend refused a call for good (HTTP 4xx other than 408/429)."""


class OutputMissing(BackendError):
    """A succeeded job's output is not there: not yet (the service publishes it late) or no longer (deleted after
    the service's retention). The runner looks again for ``jobs.output_wait``, then sends the requests again."""


class RunFailed(BatchflowError):
    """The run finished, but more records failed than ``output.max_failed`` allows."""
