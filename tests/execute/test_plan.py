"""The plan is pure: state + now -> steps. These tests assert on plan contents, as sqlmesh does."""

from __future__ import annotations

from batchflow.execute import plan as p
from batchflow.state import state as st
from batchflow.state.state import Job, Shard, State


def _state(*statuses: str, not_before: float = 0.0) -> State:
    shards = []
    for i, status in enumerate(statuses):
        job = Job(n=1, input=f"shards/{i}", count=10, digest="d", display_name=f"dn{i}", status=status,
                  not_before=not_before, name=None if status in (st.WRITTEN, st.STAGED) else f"batches/{i}")
        shards.append(Shard(i, 10, 100, "d", f"shards/{i}", f"m/{i}", jobs=[job]))
    return State("s", "fp", records=10 * len(statuses), shards=shards)


def test_written_shards_are_submitted_up_to_max_concurrent() -> None:
    plan = p.make_plan(_state(*[st.WRITTEN] * 6), now=0, max_concurrent=4, output_fingerprint="o")
    assert plan.steps == tuple(p.Submit(i, 1) for i in range(4))


def test_running_jobs_hold_their_slots_and_are_polled_in_one_step() -> None:
    plan = p.make_plan(_state(st.RUNNING, st.SUBMITTED, st.WRITTEN, st.WRITTEN), now=0, max_concurrent=3,
                       output_fingerprint="o")
    assert plan.steps == (p.Poll(((0, 1), (1, 1))), p.Submit(2, 1))
    assert plan.waiting is False


def test_a_staged_job_waits_for_a_free_slot_like_a_written_one() -> None:
    plan = p.make_plan(_state(st.RUNNING, st.STAGED, st.STAGED), now=0, max_concurrent=2, output_fingerprint="o")
    assert plan.steps == (p.Poll(((0, 1),)), p.Submit(1, 1))


def test_a_job_left_submitting_is_adopted_not_created_again() -> None:
    plan = p.make_plan(_state(st.SUBMITTING), now=0, max_concurrent=4, output_fingerprint="o")
    assert plan.steps == (p.Adopt(0, 1),)


def test_finished_jobs_are_collected_and_collected_ones_settled() -> None:
    plan = p.make_plan(_state(st.SUCCEEDED, st.EXPIRED, st.COLLECTED), now=0, max_concurrent=4,
                       output_fingerprint="o")
    assert plan.steps == (p.Collect(0, 1), p.Collect(1, 1), p.Settle(2))


def test_a_job_in_backoff_waits_until_its_time() -> None:
    plan = p.make_plan(_state(st.WRITTEN, not_before=100.0), now=40, max_concurrent=4, output_fingerprint="o")
    assert plan.steps == ()
    assert plan.wait_until == 100.0
    assert plan.waiting
    later = p.make_plan(_state(st.WRITTEN, not_before=100.0), now=100, max_concurrent=4, output_fingerprint="o")
    assert later.steps == (p.Submit(0, 1),)


def test_done_state_merges_once_then_is_finished() -> None:
    state = _state(st.COLLECTED)
    state.shards[0].done = True
    assert p.make_plan(state, 0, 4, "o").steps == (p.Keep(),), "answers are kept before anything is merged"
    state.answers = {"dir": "gen-1/answers"}
    assert p.make_plan(state, 0, 4, "o").steps == (p.Merge(),)
    state.merged = {"output": "o", "rows": 10, "ok": 10, "failed": 0}
    assert p.make_plan(state, 0, 4, "o").finished
    assert p.make_plan(state, 0, 4, "other").steps == (p.Merge(),), "a changed output is merged again"
    assert p.make_plan(state, 0, 4, "o", output_exists=False).steps == (p.Merge(),), "a deleted output too"


def test_a_job_not_found_once_is_looked_up_again_only_after_its_wait() -> None:
    state = _state(st.SUBMITTING, not_before=50.0)
    assert p.make_plan(state, now=10, max_concurrent=4, output_fingerprint="o").wait_until == 50.0
    assert p.make_plan(state, now=10, max_concurrent=4, output_fingerprint="o").steps == ()
    assert p.make_plan(state, now=50, max_concurrent=4, output_fingerprint="o").steps == (p.Adopt(0, 1),)


def test_finished_jobs_are_collected_before_anything_else() -> None:
    plan = p.make_plan(_state(st.SUBMITTING, st.RUNNING, st.SUCCEEDED, st.WRITTEN), now=0, max_concurrent=4,
                       output_fingerprint="o")
    assert plan.steps == (p.Collect(2, 1), p.Adopt(0, 1), p.Poll(((1, 1),)), p.Submit(3, 1))


def test_a_job_without_a_change_for_stuck_after_is_cancelled_once_per_period() -> None:
    state = _state(st.SUBMITTED, st.RUNNING, st.RUNNING)
    for job, (created, progress) in zip((s.jobs[0] for s in state.shards), ((0.0, None), (0.0, 90.0), (50.0, None)),
                                        strict=True):
        job.created_at, job.progress_at = created, progress
    plan = p.make_plan(state, now=100, max_concurrent=4, output_fingerprint="o", stuck_after=100)
    assert [s for s in plan.steps if isinstance(s, p.Unstick)] == [p.Unstick(0, 1)]  # 100 s pending, no news
    assert p.make_plan(state, now=99, max_concurrent=4, output_fingerprint="o", stuck_after=100).steps == (
        p.Poll(((0, 1), (1, 1), (2, 1))),)


def test_jobs_wait_for_room_under_the_enqueued_token_quota() -> None:
    state = _state(st.WRITTEN, st.WRITTEN, st.WRITTEN)
    for shard in state.shards:
        shard.jobs[0].tokens = 60
    assert p.make_plan(state, now=0, max_concurrent=4, output_fingerprint="o", token_room=130).steps == (
        p.Submit(0, 1), p.Submit(1, 1))
    # alone, a job bigger than the quota still goes (it could never go otherwise); beside one in flight it waits
    assert p.make_plan(state, now=0, max_concurrent=4, output_fingerprint="o", token_room=10).steps == (
        p.Submit(0, 1),)
    state.shards[0].jobs[0].status, state.shards[0].jobs[0].name = st.RUNNING, "batches/0"
    assert p.make_plan(state, now=0, max_concurrent=4, output_fingerprint="o", token_room=10).steps == (
        p.Poll(((0, 1),)),)


def test_a_succeeded_job_whose_output_is_late_is_collected_after_its_backoff() -> None:
    plan = p.make_plan(_state(st.SUCCEEDED, not_before=50.0), now=10, max_concurrent=4, output_fingerprint="o")
    assert plan.steps == () and plan.wait_until == 50.0
    assert p.make_plan(_state(st.SUCCEEDED, not_before=50.0), now=50, max_concurrent=4,
                       output_fingerprint="o").steps == (p.Collect(0, 1),)
