"""What a run does on threads beside its cycle: the jobs' creates, a few at a time, and their collections.

A finished job's output is downloaded and parsed (one file on gemini, several on vertex; minutes of work at a
hundred million records) on a bounded pool while the run's own thread goes on polling, creating and settling.
A collection's thread writes only the job's results file and its counts (collect.py); the run's thread applies
the outcome (the job's status, the state saved), so the state changes in one place.

Creates are a burst of independent calls at the start of a run: a few in flight at once, each job marked
"submitting" (and saved) before any is sent, exactly as when they went one by one.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Generic, TypeVar

from batchflow import logs

log = logs.get_logger(__name__)

# Collections at once: each holds one job's output as it parses it (streamed: a buffer and the keys it saw).
COLLECTIONS = 4
# Creates in flight at once. One create is a round trip and a little server work; four overlap them without
# looking like a flood to the service's rate limits.
CREATES = 4

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")
R = TypeVar("R")


class Pool(Generic[K]):
    """Tasks by key on a bounded pool of threads; each task's outcome is handed back once, by ``finished``."""

    def __init__(self, workers: int, name: str) -> None:
        self._workers, self._name = workers, name
        self._executor: ThreadPoolExecutor | None = None  # made on first use: most runs collect nothing
        self._tasks: dict[K, Future[None]] = {}

    def start(self, key: K, task: Callable[[], None]) -> None:
        """Run ``task`` on the pool, unless the task of this key is still running."""
        if key in self._tasks:
            return
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self._workers, thread_name_prefix=self._name)
        self._tasks[key] = self._executor.submit(task)

    def running(self) -> bool:
        """Whether a task is started and its outcome not yet handed back."""
        return bool(self._tasks)

    def finished(self) -> list[tuple[K, BaseException | None]]:
        """The tasks that ended since the last call, in the order they were started: (key, what it raised)."""
        done = [(key, task) for key, task in self._tasks.items() if task.done()]
        for key, _ in done:
            del self._tasks[key]
        return [(key, task.exception()) for key, task in done]

    def wait(self, timeout: float) -> None:
        """Until a task ends, or ``timeout`` seconds."""
        if self._tasks:
            wait(self._tasks.values(), timeout=timeout, return_when=FIRST_COMPLETED)

    def close(self) -> None:
        """Drop the tasks not started; wait for those under way (they write in the state dir, which the run's
        lock guards until this returns)."""
        under_way = sum(task.running() for task in self._tasks.values())
        if under_way:  # a run stopped by an error or Ctrl-C: a download is not cut short, and may take a while
            log.info("waiting for the collections under way to end", collections=under_way)
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        self._tasks.clear()


def each(items: Iterable[T], call: Callable[[T], R], workers: int) -> list[tuple[T, R | BaseException]]:
    """``call`` on every item, ``workers`` at a time; (item, its result or what it raised), in the items' order."""
    items = list(items)
    if len(items) <= 1:
        return [(item, _outcome(call, item)) for item in items]
    with ThreadPoolExecutor(min(workers, len(items)), thread_name_prefix="create") as executor:
        return list(zip(items, executor.map(lambda item: _outcome(call, item), items), strict=True))


def _outcome(call: Callable[[T], R], item: T) -> R | BaseException:
    try:
        return call(item)
    except Exception as exc:  # handed to the caller, which decides what each error means
        return exc

