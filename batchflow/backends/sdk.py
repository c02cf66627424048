"""What the gemini and vertex backends share: google-genai's job calls and its errors sorted for the runner."""

from __future__ import annotations

import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from batchflow.backends.base import JobInfo, MediaStaging, Stored, job_status, service_state
from batchflow.errors import BackendError, QuotaExceeded, TransientError, UnreachableError
from batchflow.libs.deadlines import Deadlines, deadlines, timed_out, timed_out_error

_TRANSIENT_CODES = frozenset({408, 429, 500, 502, 503, 504})
_BATCH_METHODS = {"generate": "batchGenerateContent", "embed": "asyncBatchEmbedContent"}
_LIST_PAGE = 100
_GETS_BEFORE_LIST = 3  # polling more jobs than this costs one paged ``list`` instead of a ``get`` each


@contextmanager
def api_errors(call: str) -> Iterator[None]:
    """Sort the SDK's and the transport's exceptions into transient and terminal ones."""
    from google.genai import errors

    try:
        yield
    except errors.APIError as exc:
        where = f"{call}: HTTP {exc.code} {exc.status or ''}: {exc.message or ''}".strip()
        kind = QuotaExceeded if exc.code == 429 else TransientError if exc.code in _TRANSIENT_CODES else BackendError
        raise kind(where) from exc
    except Exception as exc:
        if timed_out(exc):  # google-genai's own retries (retry.call_attempts) are spent
            raise timed_out_error(call, _host(exc), _waited(exc)) from exc
        if _is_auth_error(exc):  # google-auth found no credentials, or they were refused (retryable: a network blip)
            kind = TransientError if getattr(exc, "retryable", False) or type(exc).__name__ == "TransportError" \
                else BackendError
            raise kind(f"{call}: no usable credentials for the batch API: {type(exc).__name__}: {exc}") from exc
        if _is_unreachable(exc):
            raise UnreachableError(f"{call}: the batch API cannot be reached: {type(exc).__name__}: {exc}") from exc
        if _is_transport_error(exc):
            raise TransientError(f"{call}: {type(exc).__name__}: {exc}") from exc
        raise


def _host(exc: BaseException) -> str:
    """``host:port`` of the request that timed out (httpx keeps it on the exception), else "the batch API"."""
    try:
        url = exc.request.url  # type: ignore[attr-defined]
        return f"{url.host}:{url.port}" if url.port else str(url.host)
    except (AttributeError, RuntimeError):  # httpx raises RuntimeError when no request is attached
        return "the batch API"


def _waited(exc: BaseException) -> float:
    """The read timeout the request carried, in seconds (httpx keeps it in the request's extensions)."""
    try:
        return float(exc.request.extensions["timeout"]["read"])  # type: ignore[attr-defined]
    except (AttributeError, RuntimeError, KeyError, TypeError):
        return deadlines().call


def _is_unreachable(exc: BaseException) -> bool:
    """Connection refused, no such host: nothing answered at all (a reset or a timeout may be load)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (ConnectionRefusedError, socket.gaierror)):
            return True
        if any(cls.__name__ == "ConnectError" for cls in type(exc).__mro__) and "timed out" not in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return False


def _is_auth_error(exc: BaseException) -> bool:
    """google-auth's errors (no Application Default Credentials, a refresh refused) share one base class."""
    return any(cls.__name__ == "GoogleAuthError" for cls in type(exc).__mro__)


def _is_transport_error(exc: Exception) -> bool:
    if isinstance(exc, OSError):
        return True
    # httpx and its fork httpx2 both name their base class TransportError; google-genai uses either.
    return any(cls.__name__ in {"TransportError", "TimeoutException"} for cls in type(exc).__mro__)


def _done(job: Any) -> int | None:
    """Requests finished so far, from Vertex's completionStats (google-genai drops the Gemini API's batchStats)."""
    stats = getattr(job, "completion_stats", None)
    if stats is None:
        return None
    return int(stats.successful_count or 0) + int(stats.failed_count or 0)


def state_name(job: Any) -> str:
    """The SDK's job state as a string, ``JOB_STATE_X``."""
    return str(job.state.name if hasattr(job.state, "name") else job.state)


def job_error(job: Any) -> str | None:
    """A job's error as one line, if it has one."""
    if job.error is None:
        return None
    return f"{job.error.code or ''} {job.error.message or ''}".strip() or None


class SdkBackend:
    """Job lookups, polling and cancelling through ``client.batches``; subclasses stage, create and read."""

    poll_interval_cap: float | None = None

    def __init__(self, client: Any, limits: Deadlines | None = None) -> None:
        self.client = client
        self.deadlines = limits or deadlines()  # a create's own options are made from these

    def find(self, display_name: str) -> JobInfo | None:
        with api_errors(f"list (looking for {display_name})"):
            for job in self._list(self._find_filter(display_name)):
                if job.display_name == display_name:
                    return self._info(job)
        return None

    def find_many(self, display_names: set[str]) -> dict[str, JobInfo]:
        """The jobs of these display names that exist, in one paged list (the newest job of a name wins)."""
        found: dict[str, JobInfo] = {}
        with api_errors("list (looking for jobs this state has no record of)"):
            for job in self._list():
                if job.display_name in display_names and job.display_name not in found:
                    found[job.display_name] = self._info(job)
        return found

    def poll(self, names: Sequence[str]) -> dict[str, JobInfo]:
        if len(names) <= _GETS_BEFORE_LIST:
            return {name: self._get(name) for name in names}
        return self._list_until(set(names))

    def cancel(self, name: str) -> None:
        with api_errors(f"cancel {name}"):
            self.client.batches.cancel(name=name)

    def billed_requests(self, path: Path) -> int:
        """Every line: a request a key, each answered and billed (the Gemini API's way; Vertex overrides it)."""
        with open(path, "rb") as fh:
            return sum(1 for _ in fh)

    def model_problem(self, model: str, task: str) -> str | None:
        """A 404, or (Gemini API) supported methods without the task's batch method; Vertex's publisher models
        list no methods, so there a model the service knows passes."""
        from google.genai import errors

        try:
            with api_errors(f"models.get {model}"):
                found = self.client.models.get(model=model)
        except BackendError as exc:
            cause = exc.__cause__
            if isinstance(cause, errors.APIError) and cause.code == 404:
                return f"the service does not know model {model!r} (models.get: 404 NOT_FOUND)"
            raise
        methods = found.supported_actions
        if methods is not None and _BATCH_METHODS[task] not in methods:
            return (f"model {model!r} does not run {task} batch jobs (the service lists its methods as "
                    f"{', '.join(methods) or 'none'})")
        return None

    def release_media(self) -> int:
        """Nothing staged apart from the jobs' inputs (a backend that stages media deletes them here)."""
        return 0

    def media_staging(self, contents: dict[str, tuple[str, int]]) -> MediaStaging:
        """Every content to upload (a backend that can tell what is staged already says so)."""
        return MediaStaging(len(contents), sum(size for _, size in contents.values()))

    def job_media_done(self, display_name: str) -> int:
        """Nothing staged for one job's media alone (a backend whose media count against a quota frees them)."""
        return 0

    def stored(self, spec_name: str) -> list[Stored]:
        """Nothing staged that outlives its jobs (a backend that stages files says what it left)."""
        return []

    def media_read(self, path: Path) -> set[str] | None:
        """No media staged apart from the jobs' inputs."""
        return set()

    def delete_stored(self, stored: Stored) -> None:
        raise BackendError(f"delete {stored.ref}: this backend stages nothing to clean up")

    def close(self) -> None:
        self.client.close()

    def _info(self, job: Any) -> JobInfo:
        state = state_name(job)
        return JobInfo(str(job.name), job.display_name, job_status(state), job_error(job), self._output(job),
                       _done(job), service_state(state))

    def _output(self, job: Any) -> str | None:
        raise NotImplementedError

    def _find_filter(self, display_name: str) -> str | None:
        return None

    def _list(self, filter_: str | None = None) -> Any:
        from google.genai import types

        return self.client.batches.list(config=types.ListBatchJobsConfig(page_size=_LIST_PAGE, filter=filter_))

    def _get(self, name: str) -> JobInfo:
        with api_errors(f"get {name}"):
            return self._info(self.client.batches.get(name=name))

    def _list_until(self, wanted: set[str]) -> dict[str, JobInfo]:
        found: dict[str, JobInfo] = {}
        with api_errors("list"):
            for job in self._list():
                if job.name in wanted:
                    found[job.name] = self._info(job)
                    if len(found) == len(wanted):
                        break
        for name in wanted - found.keys():  # older than the pages we read: ask for it alone
            found[name] = self._get(name)
        return found
