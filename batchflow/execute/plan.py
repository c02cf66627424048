"""State + spec + now -> the steps to take now. Pure: no I/O, no clock of its own.

``batchflow plan`` prints the plan that ``batchflow run`` executes, cycle after cycle, until ``done``.
"""

from __future__ import annotations

from dataclasses import dataclass

from batchflow.state import state as st
from batchflow.state.state import State


@dataclass(frozen=True)
class Submit:
    """Stage the job's input if it is not yet staged, record "submitting", then create the job."""

    shard: int
    job: int


@dataclass(frozen=True)
class Adopt:
    """A create may have happened before a crash: look the job up by display name before creating again."""

    shard: int
    job: int


@dataclass(frozen=True)
class Poll:
    jobs: tuple[tuple[int, int], ...]  # (shard, job) of every job the backend is running


@dataclass(frozen=True)
class Unstick:
    """A job pending, or running without progress, for ``jobs.stuck_after``: cancel it (what it still delivers is
    collected; its unanswered requests go in a new job, a job attempt)."""

    shard: int
    job: int


@dataclass(frozen=True)
class Collect:
    """Download a finished job's results into the state dir."""

    shard: int
    job: int


@dataclass(frozen=True)
class Settle:
    """Every job of the shard is collected: retry what failed, or call the shard done."""

    shard: int


@dataclass(frozen=True)
class Keep:
    """Every unit is done: write every record's answer, and the index the next generation plans from."""


@dataclass(frozen=True)
class Merge:
    """The answers are kept: write the output rows in input order."""


Step = Submit | Adopt | Poll | Unstick | Collect | Settle | Keep | Merge


@dataclass(frozen=True)
class Plan:
    steps: tuple[Step, ...]
    wait_until: float | None  # the earliest moment a backoff ends, when nothing can start before
    finished: bool  # done and merged into the current output: nothing left to do

    @property
    def waiting(self) -> bool:
        """Nothing to do now but wait for the backend or a backoff."""
        return all(isinstance(s, Poll) for s in self.steps) and not self.finished


def make_plan(state: State, now: float, max_concurrent: int, output_fingerprint: str,
              output_exists: bool = True, settle_only: bool = False, stuck_after: float = float("inf"),
              token_room: int | None = None) -> Plan:
    """The steps to take now, in the order to take them: finished jobs are collected first.

    ``stuck_after``: a job the service reports no change of for that long is cancelled (``Unstick``).
    ``token_room``: how many more input tokens may be in flight (``jobs.max_enqueued_tokens`` less what the spec
    has in flight); a job over it waits for one to finish (the first job always goes, however big).

    ``settle_only``: the plan is about to change; only follow the jobs already created (or maybe created) to
    their collection, and create nothing. ``finished`` then means no such job is left."""
    if settle_only:
        return _settle_only(state, now)
    if state.done:
        if state.answers is None or not state.answers.get("complete", True):
            return Plan((Keep(),), None, False)
        merged = state.merged is not None and state.merged.get("output") == output_fingerprint and output_exists
        return Plan(() if merged else (Merge(),), None, merged)
    adopt: list[Step] = []
    collect: list[Step] = []
    unstick: list[Step] = []
    remote: list[tuple[int, int]] = []
    ready: list[st.Job] = []
    shard_of: dict[int, int] = {}
    in_flight = 0
    backoffs: list[float] = []
    for shard in state.shards:
        job = shard.current
        if shard.done or job is None:
            continue
        in_flight += job.status in st.IN_FLIGHT
        if job.status == st.SUBMITTING and job.not_before > now:
            backoffs.append(job.not_before)  # looked up once and not found: look again before creating
        elif job.status == st.SUBMITTING:
            adopt.append(Adopt(shard.index, job.n))
        elif job.status in st.REMOTE:
            remote.append((shard.index, job.n))
            if now - job.unchanged_since(now) >= stuck_after:
                unstick.append(Unstick(shard.index, job.n))
        elif job.status in st.FINISHED and job.not_before > now:
            backoffs.append(job.not_before)  # a succeeded job's output not there yet: look again later
        elif job.status in st.FINISHED:
            collect.append(Collect(shard.index, job.n))
        elif job.status == st.COLLECTED:
            collect.append(Settle(shard.index))
        elif job.status == st.STAGED or job.not_before <= now:
            ready.append(job)
            shard_of[id(job)] = shard.index
        else:
            backoffs.append(job.not_before)
    # A staged job, like a written one, waits for a free slot of max_concurrent: staged is not yet created.
    fresh = ready[:max(0, max_concurrent - in_flight)]
    busy = len(remote) + len(adopt) + sum(job.status == st.SUBMITTING for job in (s.current for s in state.shards)
                                          if job is not None and job.not_before > now)
    admitted = _admitted(fresh, token_room, busy)
    submits: list[Step] = [Submit(shard_of[id(j)], j.n) for j in admitted]
    steps = (*collect, *adopt, *([Poll(tuple(remote))] if remote else []), *unstick, *submits)
    return Plan(steps, min(backoffs) if backoffs and not submits else None, False)


def _admitted(ready: list[st.Job], token_room: int | None, busy: int) -> list[st.Job]:
    """The ready jobs that fit in ``token_room`` (estimated input tokens), in order; with no job at the service
    (``busy``: created or maybe created) the first always goes (a job bigger than the quota can only run alone)."""
    if token_room is None:
        return ready
    admitted: list[st.Job] = []
    for job in ready:
        if job.tokens > token_room and (admitted or busy):
            break
        admitted.append(job)
        token_room -= job.tokens
    return admitted


def _settle_only(state: State, now: float) -> Plan:
    steps: list[Step] = []
    remote: list[tuple[int, int]] = []
    backoffs: list[float] = []
    for shard in state.shards:
        job = shard.current
        if job is None or job.status not in st.LIVE:
            continue
        if job.status == st.SUBMITTING and job.not_before > now:
            backoffs.append(job.not_before)
        elif job.status == st.SUBMITTING:
            steps.append(Adopt(shard.index, job.n))
        elif job.status in st.REMOTE:
            remote.append((shard.index, job.n))
        elif job.not_before > now:
            backoffs.append(job.not_before)
        else:
            steps.append(Collect(shard.index, job.n))
    if remote:
        steps.insert(0, Poll(tuple(remote)))
    live = bool(steps or backoffs)
    return Plan(tuple(steps), min(backoffs) if backoffs and not steps else None, not live)
