"""How long any remote call may wait, in one place, handed to each client in its own terms.

batchflow runs from cron, and a call that waits forever is worse than one that fails: the next runs queue behind
its lease and nothing alerts. So every call to a remote peer (the batch API, GCS, BigQuery) is bounded by kind:

- **connect**: a TCP (and TLS) connection not made within ``CONNECT`` seconds is a failed call;
- **a call**: a request with no byte of its answer for ``CALL`` seconds is a failed call;
- **a transfer** (an upload or download): judged by progress, not by a total: no byte moved for ``CALL`` seconds
  is a failed call, however long the transfer as a whole takes;
- **a BigQuery job** (a query, a load): ``BIGQUERY_JOB`` seconds, as BigQuery's own job timeout.

``BATCHFLOW_CALL_TIMEOUT=SECONDS`` sets them all (connect at most that, and at most ``CONNECT``); the spec's
``retry.call_attempts`` says how many times in all a call that timed out is tried. Each client gets these through
its own mechanism (google-genai ``HttpOptions``, gcsfs' aiohttp ``ClientTimeout``, google-cloud-storage and
google-cloud-bigquery ``timeout=`` / ``retry=``), so a call that times out is cancelled by the client that made
it, never abandoned on a thread that goes on waiting.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from batchflow.errors import CallTimedOut, InputError

ENV = "BATCHFLOW_CALL_TIMEOUT"
CONNECT = 10.0  # seconds to open a connection
CALL = 60.0  # seconds without a byte, for a call or a transfer
BIGQUERY_JOB = 1800.0  # seconds a BigQuery query or load job may run (BigQuery's jobTimeoutMs)
# google-genai's own statuses for a retry, narrowed to a timeout: 429 and 5xx the runner backs off from itself
# (a 429 on a create is backpressure: the job is looked up before another create)
_GENAI_RETRY_STATUSES = [408]


@dataclass(frozen=True)
class Deadlines:
    """Seconds per kind of wait (module doc), and how many attempts a timed-out call gets in all."""

    connect: float = CONNECT
    call: float = CALL
    bigquery_job: float = BIGQUERY_JOB
    attempts: int = 3

    @property
    def worst_call(self) -> float:
        """The longest one call can keep a run waiting: every attempt waiting its full time, plus the backoffs."""
        return self.attempts * (self.connect + self.call) + _backoff_total(self.attempts)


def deadlines(attempts: int = 3, environ: Mapping[str, str] | None = None) -> Deadlines:
    """The deadlines in force: the defaults, or ``BATCHFLOW_CALL_TIMEOUT`` for all of them."""
    text = (os.environ if environ is None else environ).get(ENV, "").strip()
    if not text:
        return Deadlines(attempts=attempts)
    try:
        seconds = float(text)
    except ValueError:
        raise InputError(f"{ENV}={text!r}: expected a number of seconds, e.g. {ENV}=60") from None
    if not seconds > 0:
        raise InputError(f"{ENV}={text!r}: expected a number of seconds above 0")
    return Deadlines(connect=min(seconds, CONNECT), call=seconds, bigquery_job=seconds, attempts=attempts)


def _backoff_total(attempts: int) -> float:
    """The pauses between attempts: 1 s, 2 s, 4 s ... (each client's own exponential backoff, capped at 10 s),
    each with up to a second of jitter."""
    return float(sum(min(2**n, 10) + 1 for n in range(attempts - 1)))


# --- google-genai (httpx underneath: its timeout is per operation, connect, read a byte, write a byte) ---

def genai_http_options(d: Deadlines, base_url: str | None = None) -> Any:
    """``HttpOptions`` for a google-genai client: every request bounded, a timed-out one tried ``attempts`` times,
    a refused connection only twice (libs/refusals.py: it answers the same way every time)."""
    from google.genai import types

    from batchflow.libs.refusals import genai_client_args

    return types.HttpOptions(base_url=base_url, timeout=int(d.call * 1000), client_args=genai_client_args(),
                             retry_options=types.HttpRetryOptions(attempts=d.attempts, initial_delay=1.0,
                                                                  max_delay=10.0,
                                                                  http_status_codes=_GENAI_RETRY_STATUSES))


def genai_once(d: Deadlines, **options: Any) -> Any:
    """Per-request ``HttpOptions`` for a call that must not be repeated blind (a job create: the runner looks the
    job up by its display name before creating it again)."""
    from google.genai import types

    return types.HttpOptions(timeout=int(d.call * 1000), retry_options=types.HttpRetryOptions(attempts=1), **options)


# --- gcsfs (aiohttp underneath) ---

def gcsfs_options(d: Deadlines) -> dict[str, Any]:
    """gcsfs storage options: aiohttp's ``ClientTimeout`` per request (gcsfs hands ``requests_timeout`` to every
    ``session.request``). ``sock_read`` is a gap between bytes of the answer, so a long download that keeps
    moving is never cut; gcsfs retries a timed-out request itself (6 attempts, its own constant)."""
    import aiohttp

    return {"requests_timeout": aiohttp.ClientTimeout(total=None, connect=d.connect + d.call,
                                                      sock_connect=d.connect, sock_read=d.call)}


def transfer_timeout(d: Deadlines, size: int) -> float:
    """A bound for one gcsfs call that moves ``size`` bytes, given to fsspec's sync wrapper (``timeout=``, which
    cancels the coroutine): aiohttp has no timeout on a body that stops being sent, so an upload stalled half-way
    is bounded by the slowest progress still called moving (256 KiB a second) plus a call's wait."""
    return d.connect + d.call + size / (256 * 1024)


# --- google-cloud-storage and google-cloud-bigquery (requests underneath, google-api-core retries) ---

def http_timeout(d: Deadlines) -> tuple[float, float]:
    """``timeout=`` for google-cloud-storage and google-cloud-bigquery calls: (connect, read a byte) seconds."""
    return (d.connect, d.call)


def api_core_retry(d: Deadlines, base: Any) -> Any:
    """``base`` (a google-api-core ``Retry``: its predicate, which errors it tries again) bounded twice: its
    attempts end within ``worst_call``, and a call is tried at most ``attempts`` times when they time out.
    google-api-core counts only time (its ``Retry`` has no attempt count), so a peer that never answers would be
    tried as often as the time allows, and ``retry.call_attempts: 1`` would not mean once."""
    return _timeouts_counted()(predicate=base._predicate, initial=1.0, maximum=10.0, multiplier=2.0,
                               timeout=d.worst_call, attempts=d.attempts)


@functools.cache
def _timeouts_counted() -> type:
    """google-api-core's ``Retry``, stopping once a call's attempts that timed out reach ``attempts`` (made on
    first use: google-api-core comes with the gcs and bigquery extras)."""
    from google.api_core.retry import Retry

    class TimeoutsCounted(Retry):
        def __init__(self, *args: Any, attempts: int = 3, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.attempts = attempts

        def __call__(self, func: Any, on_error: Any = None) -> Any:
            """``func`` wrapped so that each call of it counts its own timed-out attempts; the last one is raised
            as it came (google-api-core raises what an ``on_error`` raises, and tries no more)."""

            @functools.wraps(func)
            def counted(*args: Any, **kwargs: Any) -> Any:
                timeouts = 0

                def count(exc: Exception) -> None:
                    nonlocal timeouts
                    if on_error is not None:
                        on_error(exc)
                    timeouts += timed_out(exc)
                    if timeouts >= self.attempts:
                        raise exc

                return Retry.__call__(self, func, on_error=count)(*args, **kwargs)

            return counted

    return TimeoutsCounted


def bigquery_job_config(d: Deadlines, config: Any) -> Any:
    """A query or load job config with BigQuery's own job timeout set (``jobTimeoutMs``)."""
    config.job_timeout_ms = int(d.bigquery_job * 1000)
    return config


# --- a timeout, whichever client raised it ---

_TIMEOUT_NAMES = frozenset({"TimeoutException", "Timeout", "ReadTimeoutError", "ConnectTimeoutError", "RetryError"})


def timed_out(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is a client giving up on a peer that did not answer in time: asyncio's,
    aiohttp's and fsspec's ``TimeoutError``, httpx's ``TimeoutException``, requests' and urllib3's timeouts, or
    google-api-core's ``RetryError`` (its retries ran out of time)."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, TimeoutError) or any(cls.__name__ in _TIMEOUT_NAMES for cls in type(cause).__mro__):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def timed_out_error(call: str, host: str, waited: float) -> CallTimedOut:
    """The one line a run ends with when a call timed out past its retries: the call, the host, the wait."""
    return CallTimedOut(f"{call}: no answer from {host} within {waited:g} s, after its retries "
                        "(retry.call_attempts); the state is saved, the next run picks up")


@contextmanager
def bounded(call: str, host: str, d: Deadlines) -> Iterator[None]:
    """A timeout raised by any client inside, as ``CallTimedOut`` naming the call and the host."""
    try:
        yield
    except CallTimedOut:
        raise
    except Exception as exc:
        if timed_out(exc):
            raise timed_out_error(call, host, d.call) from exc
        raise
