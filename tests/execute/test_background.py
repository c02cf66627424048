"""Creates a few at a time and collections on a pool beside the run's cycle: the run waits for neither.

Each test makes an overlap the code must allow, with a barrier or an event that only a concurrent call can
release: run one after another, the calls would wait out the timeout and the run would fail.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
import structlog.testing
from support.helpers import read_rows, write_jsonl, write_spec

from batchflow.backends.base import JobInfo
from batchflow.emulator import start_in_thread
from batchflow.errors import BackendError
from batchflow.execute.runner import Runner
from batchflow.execute.threads import Pool
from batchflow.spec.spec import load_spec
from batchflow.state.state import COLLECTED, Job, Shard, state_store

TIMEOUT = 20.0


def _runner(tmp_path: Path, base_url: str, records: int, **jobs: Any) -> Runner:
    write_jsonl(tmp_path / "data/in.jsonl", [{"id": f"k{i:03d}", "text": f"t{i}"} for i in range(records)])
    spec = write_spec(tmp_path, backend={"type": "gemini", "base_url": base_url},
                      jobs={"max_requests": 10, "poll_interval": "0.05s", **jobs})
    return Runner(load_spec(spec))


def _all_collected(tmp_path: Path, runner: Runner, records: int) -> None:
    state = state_store(runner.spec).load()
    assert state is not None and all(job.status == COLLECTED for _, job in state.jobs())
    assert [r["key"] for r in read_rows(tmp_path / "out/result.jsonl")] == [f"k{i:03d}" for i in range(records)]


def test_finished_jobs_are_collected_together_on_the_pool(tmp_path: Path) -> None:
    with start_in_thread(tmp_path / "emulator", job_seconds=0.0) as emulator:
        runner = _runner(tmp_path, emulator.base_url, 30)
        together = threading.Barrier(3, timeout=TIMEOUT)  # three collections in flight at once, or none passes
        collect = runner.path.collect

        def collect_together(shard: Shard, job: Job) -> None:
            together.wait()
            collect(shard, job)

        runner.path.collect = collect_together  # type: ignore[method-assign]
        assert runner.run().ok == 30
    _all_collected(tmp_path, runner, 30)


def test_a_job_is_collected_while_the_next_is_created_and_polled(tmp_path: Path) -> None:
    with start_in_thread(tmp_path / "emulator", job_seconds=0.0) as emulator:
        runner = _runner(tmp_path, emulator.base_url, 20, max_concurrent=1)  # job 2 is created once 1 ends
        second: dict[str, str] = {}
        polled = threading.Event()
        create, collect, poll = runner.path.create, runner.path.collect, runner.path.jobs.poll

        def create_and_note(shard: Shard, job: Job) -> JobInfo:
            info = create(shard, job)
            if shard.index == 1:
                second["name"] = info.name
            return info

        def note_polls(names: Any) -> dict[str, JobInfo]:
            if second.get("name") in names:
                polled.set()
            return poll(names)

        def collect_after_the_next_is_polled(shard: Shard, job: Job) -> None:
            if shard.index == 0:
                assert polled.wait(TIMEOUT), "job 2 was not created and polled while job 1 was being collected"
            collect(shard, job)

        runner.path.create = create_and_note  # type: ignore[method-assign]
        runner.path.jobs.poll = note_polls  # type: ignore[method-assign]
        runner.path.collect = collect_after_the_next_is_polled  # type: ignore[method-assign]
        assert runner.run().ok == 20
    _all_collected(tmp_path, runner, 20)


def test_creates_go_together_once_every_job_is_saved_submitting(tmp_path: Path) -> None:
    with start_in_thread(tmp_path / "emulator", job_seconds=0.0) as emulator:
        runner = _runner(tmp_path, emulator.base_url, 40)
        together = threading.Barrier(4, timeout=TIMEOUT)  # four creates in flight at once, or none passes
        saved: list[list[str]] = []
        create = runner.path.create

        def create_together(shard: Shard, job: Job) -> JobInfo:
            state = json.loads((runner.root / "state.json").read_text())
            saved.append([j["status"] for s in state["shards"] for j in s["jobs"]])
            together.wait()
            return create(shard, job)

        runner.path.create = create_together  # type: ignore[method-assign]
        assert runner.run().ok == 40
        made = emulator.engine.stats()["creates_by_display_name"]
    assert len(made) == 4 and set(made.values()) == {1}
    assert saved == [["submitting"] * 4] * 4, "each create sent only once every job was saved submitting"
    _all_collected(tmp_path, runner, 40)


def test_a_create_refused_among_others_leaves_them_recorded_and_a_rerun_creates_only_it(tmp_path: Path) -> None:
    with start_in_thread(tmp_path / "emulator", job_seconds=0.0) as emulator:
        runner = _runner(tmp_path, emulator.base_url, 40)
        create = runner.path.create

        def refuse_the_third(shard: Shard, job: Job) -> JobInfo:
            if shard.index == 2:
                raise BackendError(f"create {job.display_name}: HTTP 400 INVALID_ARGUMENT: refused for the test")
            return create(shard, job)

        runner.path.create = refuse_the_third  # type: ignore[method-assign]
        with pytest.raises(BackendError, match="refused for the test"):
            runner.run()
        state = state_store(runner.spec).load()
        assert state is not None
        assert [(j.status, j.name is not None) for _, j in state.jobs()] == [
            ("submitted", True), ("submitted", True), ("staged", False), ("submitted", True)]
        assert Runner(runner.spec).run().ok == 40
        made = emulator.engine.stats()["creates_by_display_name"]
    assert len(made) == 4 and set(made.values()) == {1}, made
    _all_collected(tmp_path, runner, 40)


def test_a_closed_pool_waits_for_its_collections_under_way_and_says_so() -> None:
    pool: Pool[int] = Pool(2, "collect")
    started, release, ended = threading.Event(), threading.Event(), []

    def collection() -> None:
        started.set()
        release.wait(TIMEOUT)
        ended.append(True)

    pool.start(1, collection)
    assert started.wait(TIMEOUT)
    threading.Timer(0.2, release.set).start()
    with structlog.testing.capture_logs() as logs:
        pool.close()  # as a run stopped by Ctrl-C does, before its lock is released
    assert ended == [True], "close returned before the collection under way ended"
    assert {"event": "waiting for the collections under way to end", "collections": 1, "log_level": "info"} in logs


def test_a_unit_whose_job_answered_everything_is_settled_without_reading_its_results_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import batchflow.execute.shards_path

    def unread(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("a unit answered in full had its results read again to settle it")

    monkeypatch.setattr(batchflow.execute.shards_path, "outcomes", unread)
    with start_in_thread(tmp_path / "emulator", job_seconds=0.0) as emulator:
        runner = _runner(tmp_path, emulator.base_url, 20)
        assert runner.run().ok == 20
    _all_collected(tmp_path, runner, 20)
