"""The pool beside the run's cycle: tasks handed back once, and an interrupted run not held by a task under way."""

from __future__ import annotations

import threading
import time

from batchflow.execute.threads import Pool


def test_each_task_outcome_is_handed_back_once() -> None:
    pool: Pool[int] = Pool(2, "t")
    pool.start(1, lambda: None)
    pool.start(2, lambda: (_ for _ in ()).throw(ValueError("bad")))
    deadline = time.monotonic() + 5
    seen: dict[int, BaseException | None] = {}
    while len(seen) < 2 and time.monotonic() < deadline:
        pool.wait(0.1)
        seen.update(pool.finished())
    assert seen[1] is None and isinstance(seen[2], ValueError)
    assert pool.finished() == [] and not pool.running()


def test_an_interrupted_close_does_not_wait_for_a_task_under_way() -> None:
    release = threading.Event()
    pool: Pool[int] = Pool(1, "t")
    pool.start(1, lambda: release.wait(60))  # a download hung on its peer
    pool.start(2, lambda: None)  # queued behind it: never started
    time.sleep(0.1)
    start = time.monotonic()
    pool.close(wait_for_running=False)
    assert time.monotonic() - start < 1
    assert not pool.running()
    release.set()


def test_a_close_after_an_error_lets_the_task_under_way_end() -> None:
    ended = threading.Event()
    pool: Pool[int] = Pool(1, "t")
    pool.start(1, lambda: (time.sleep(0.3), ended.set()))
    time.sleep(0.05)
    pool.close()
    assert ended.is_set()
