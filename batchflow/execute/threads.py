"""What a run does on threads beside its cycle: the jobs' creates, a few at a time, and their collections.

A finished job's output is downloaded and parsed (one file on gemini, several on vertex; minutes of work at a
hundred million records) on a bounded pool while the run's own thread goes on polling, creating and settling.
A collection's thread writes only the job's results file and its counts (collect.py); the run's thread applies
the outcome (the job's status, the state saved), so the state changes in one place.

Creates are a burst of independent calls at the start of a run: a few in flight at once, each job marked
"submitting" (and saved) before any is sent, exactly as when they went one by one.
"""

from __future__ import annotations

import threading
from collections import deque
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
    """Tasks by key on at most ``workers`` threads; each task's outcome is handed back once, by ``finished``.

    The threads are daemons, not a ThreadPoolExecutor's (which the interpreter joins at exit): a run stopped by
    Ctrl-C or SIGTERM ends at once, and a collection cut short leaves only its ``.tmp`` file (collect.py writes
    each results file whole, then renames it), as a killed run would."""

    def __init__(self, workers: int, name: str) -> None:
        self._workers, self._name = workers, name
        self._tasks: dict[K, Future[None]] = {}
        self._queue: deque[tuple[Future[None], Callable[[], None]]] = deque()
        self._busy = 0
        self._lock = threading.Lock()

    def start(self, key: K, task: Callable[[], None]) -> None:
        """Run ``task`` on the pool, unless the task of this key is still running."""
        if key in self._tasks:
            return
        future: Future[None] = Future()
        self._tasks[key] = future
        with self._lock:
            self._queue.append((future, task))
        self._spawn()

    def _spawn(self) -> None:
        with self._lock:
            while self._busy < self._workers and self._queue:
                future, task = self._queue.popleft()
                self._busy += 1
                threading.Thread(target=self._run, args=(future, task), name=self._name, daemon=True).start()

    def _run(self, future: Future[None], task: Callable[[], None]) -> None:
        try:
            if future.set_running_or_notify_cancel():
                try:
                    task()
                except BaseException as exc:  # handed back by finished()
                    future.set_exception(exc)
                else:
                    future.set_result(None)
        finally:
            with self._lock:
                self._busy -= 1
            self._spawn()

    def running(self) -> bool:
        """Whether a task is started and its outcome not yet handed back."""
        return bool(self._tasks)

    def finished(self) -> list[tuple[K, BaseException | None]]:
        """The tasks that ended since the last call, in the order they were started: (key, what it raised)."""
        done = [(key, task) for key, task in self._tasks.items() if task.done() and not task.cancelled()]
        for key, _ in done:
            del self._tasks[key]
        return [(key, task.exception()) for key, task in done]

    def wait(self, timeout: float) -> None:
        """Until a task ends, or ``timeout`` seconds."""
        if self._tasks:
            wait(self._tasks.values(), timeout=timeout, return_when=FIRST_COMPLETED)

    def close(self, wait_for_running: bool = True) -> None:
        """Drop the tasks not started; wait for those under way (they write in the state dir, which the run's lock
        guards until this returns), unless the run was interrupted: then they are left to die with the process."""
        with self._lock:
            for future, _ in self._queue:
                future.cancel()
            self._queue.clear()
        under_way = [task for task in self._tasks.values() if task.running()]
        if under_way and wait_for_running:  # a run stopped by an error: a download is let end, bounded by its calls
            log.info("waiting for the collections under way to end", collections=len(under_way))
            wait(under_way)
        elif under_way:
            log.info("interrupted: the collections under way are cut short; the next run collects them again",
                     collections=len(under_way))
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

