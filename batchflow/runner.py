"""Executes the plan, cycle after cycle: stage, submit, adopt, poll, collect, settle (retry), merge."""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from batchflow import plan as p
from batchflow import state as st
from batchflow.backends import Backend, BackendFactory, JobInfo, open_backend
from batchflow.collect import collect, outcomes, subset
from batchflow.destinations import open_destination
from batchflow.errors import BackendError, BatchflowError, DataError, RunFailed, StateError, TransientError
from batchflow.merge import Tally, output_fingerprint, rows
from batchflow.prepare import display_name, fingerprint, prepare
from batchflow.sources import open_source
from batchflow.spec import Spec
from batchflow.state import Job, Shard, State, StateStore

log = structlog.get_logger(__name__)

_FIRST_POLL = 1.0
_ADOPT_RECHECK = 10.0  # seconds between the two lookups of a job that may have been created


class NotFinished(BatchflowError):
    """``--no-wait`` left jobs running (or waiting out a backoff): run again later."""

    exit_code = 75


@dataclass(frozen=True)
class Summary:
    records: int
    ok: int
    failed: int
    output: str


def state_store(spec: Spec) -> StateStore:
    """The state directory of one spec."""
    return StateStore(spec.state_dir / spec.name)


class Runner:
    """Drives one spec to the end (or, with ``wait=False``, as far as it goes without waiting)."""

    def __init__(self, spec: Spec, backends: BackendFactory = open_backend,
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep) -> None:
        self.spec = spec
        self.store = state_store(spec)
        self.root = self.store.dir
        self._backends = backends
        self._backend: Backend | None = None
        self.clock = clock
        self.sleep = sleep
        self._transient_streak = 0  # cycles in a row that met a transient error
        self._poll_ramp = _FIRST_POLL  # seconds until the next poll, doubling while nothing changes

    def run(self, wait: bool = True, restart: bool = False) -> Summary:
        with self.store.lock():
            if restart:
                self._archive()
            state = self.load_or_prepare()
            try:
                return self._drive(state, wait)
            finally:
                if self._backend is not None:
                    self._backend.close()

    def load_or_prepare(self) -> State:
        """The saved state if it was planned from this spec and input; else every shard, written now."""
        state = self.store.load()
        if state is None:
            self._check_output()
            return prepare(self.spec, self.store, open_source(self.spec.source).fingerprint())
        try:
            source_fp = open_source(self.spec.source).fingerprint()
        except DataError as exc:  # the shards hold every request already: the input is not needed again
            log.warning("the input is gone; going on from the saved state", error=str(exc))
            return state
        if state.fingerprint != fingerprint(self.spec, source_fp):
            raise StateError(f"{self.root}: the state was planned from another version of this spec or of its "
                             "input; run with --restart to start over (the old state is kept beside it)")
        return state

    def _check_output(self) -> None:
        try:
            open_destination(self.spec.output).check()
        except BatchflowError as exc:  # found before anything is spent: the user fixes the spec or the disk
            raise DataError(f"{exc} ({self.spec.where('output.path')})") from exc

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            self._backend = self._backends(self.spec, self.root)
        return self._backend

    def _archive(self) -> None:
        state = self.store.load()
        if state and any(j.status in st.IN_FLIGHT for _, j in state.jobs()):
            raise StateError(f"{self.root}: jobs are still in flight; `batchflow cancel` them before --restart")
        if self.store.path.exists():
            old = self.root / "old" / time.strftime("%Y%m%dT%H%M%S")
            old.mkdir(parents=True)
            for name in ("state.json", "shards", "jobs", "results", "rejects.jsonl"):
                if (self.root / name).exists():
                    shutil.move(self.root / name, old / name)
            log.info("restarting", archived=str(old))

    def _drive(self, state: State, wait: bool) -> Summary:
        if state.cancelled_at:
            raise RunFailed(f"{self.root}: this run was cancelled with `batchflow cancel`; "
                            "run with --restart to start over")
        out_fp = output_fingerprint(self.spec)
        while True:
            now = self.clock()
            plan = p.make_plan(state, now, self.spec.jobs.max_concurrent, out_fp, self._output_exists())
            if plan.finished:
                return self._summary(state)
            progressed = False
            streak = self._transient_streak
            for step in plan.steps:
                progressed |= self._execute(step, state)
            if self._transient_streak == streak:
                self._transient_streak = 0  # a cycle without a transient error ends the streak
            if progressed and not self._transient_streak:
                self._poll_ramp = _FIRST_POLL
                continue
            if not wait:
                raise NotFinished(f"{self._pending(state)}; run again later")
            self.sleep(self._pause(plan, now))

    def _execute(self, step: p.Step, state: State) -> bool:
        try:
            match step:
                case p.Submit(shard, n):
                    return self._submit(state, state.shards[shard], state.shards[shard].jobs[n - 1])
                case p.Adopt(shard, n):
                    return self._adopt(state, state.shards[shard].jobs[n - 1])
                case p.Poll(jobs):
                    return self._poll(state, [state.shards[s].jobs[n - 1] for s, n in jobs])
                case p.Collect(shard, n):
                    return self._collect(state, state.shards[shard], state.shards[shard].jobs[n - 1])
                case p.Settle(shard):
                    return self._settle(state, state.shards[shard])
                case p.Merge():
                    return self._merge(state, output_fingerprint(self.spec))
        except TransientError as exc:
            self._transient_streak += 1
            log.warning("transient error; will retry", step=type(step).__name__, error=str(exc),
                        retry_in=self._backoff(self._transient_streak))
        return False

    def _submit(self, state: State, shard: Shard, job: Job) -> bool:
        if job.status == st.WRITTEN:
            job.file = self.backend.stage(self.root / job.input, job.display_name)
            job.status = st.STAGED
            self.store.save(state)
        job.status = st.SUBMITTING  # saved before create: a crash from here on adopts instead of creating
        self.store.save(state)
        try:
            info = self.backend.create(self.spec.model, self.spec.task, str(job.file), job.display_name)
        except BackendError:
            job.status = st.STAGED
            self.store.save(state)
            raise
        except TransientError:
            raise  # stays "submitting": the next cycle looks it up before creating again
        job.created_at = self.clock()
        self._record(job, info)
        log.info("job submitted", shard=shard.index, job=info.name, requests=job.count, attempt=job.n)
        self.store.save(state)
        return True

    def _adopt(self, state: State, job: Job) -> bool:
        info = self.backend.find(job.display_name)
        if info is None and job.lookups == 0:
            # A create sent just before a crash may land, or a list may lag: look once more before creating.
            job.lookups = 1
            log.info("job not found; looking again before creating it", display_name=job.display_name)
            job.not_before = self.clock() + self._poll_cap(min(_ADOPT_RECHECK, self.spec.jobs.poll_interval))
        elif info is None:
            job.status, job.lookups = (st.STAGED if job.file else st.WRITTEN), 0
        else:
            log.info("job adopted", job=info.name, display_name=job.display_name)
            self._record(job, info)
        self.store.save(state)
        return True

    def _poll(self, state: State, jobs: list[Job]) -> bool:
        infos = self.backend.poll([str(j.name) for j in jobs])
        changed = False
        for job in jobs:
            info = infos[str(job.name)]
            if info.status != job.status:
                self._record(job, info)
                changed = True
        if changed:
            self.store.save(state)
        return changed

    def _record(self, job: Job, info: JobInfo) -> None:
        job.name, job.status, job.output, job.error = info.name, info.status, info.output, info.error
        if info.status in st.FINISHED:
            job.ended = info.status
            job.finished_at = self.clock()
            log.info("job finished", job=info.name, state=info.status, error=info.error)

    def _collect(self, state: State, shard: Shard, job: Job) -> bool:
        info = JobInfo(str(job.name), job.display_name, job.status, job.error, job.output)
        path = collect(self.backend, self.root, shard, job, info)
        job.results = str(path.relative_to(self.root))
        job.status = st.COLLECTED
        log.info("job collected", shard=shard.index, job=job.name, ok=job.ok, failed=job.failed)
        self.store.save(state)
        return True

    def _settle(self, state: State, shard: Shard) -> bool:
        retry = self._to_retry(shard)
        if not retry:
            shard.done = True
        else:
            n = len(shard.jobs) + 1
            rel, count, digest = subset(self.root, shard, retry, n)
            kind = "retry" if shard.jobs[-1].ended == st.SUCCEEDED else "resubmit"
            shard.jobs.append(Job(n=n, input=rel, count=count, digest=digest, kind=kind,
                                  display_name=display_name(self.spec.name, shard.index, n, digest),
                                  not_before=self.clock() + self._backoff(n - 1)))
            log.info("retrying requests", shard=shard.index, requests=count, kind=kind, attempt=n)
        self.store.save(state)
        return True

    def _to_retry(self, shard: Shard) -> set[str]:
        """Keys without an answer yet that have attempts left: of requests, and of jobs that ended unanswered."""
        retry = self.spec.retry
        return {k for k, o in outcomes(self.root, shard).items()
                if not o.ok and o.attempts < retry.request_attempts and o.job_failures < retry.job_attempts}

    def _backoff(self, k: int) -> float:
        b = self.spec.retry.backoff
        return float(min(b.max, b.initial * b.multiplier ** (k - 1)))

    def _merge(self, state: State, out_fp: str) -> bool:
        tally = Tally()
        open_destination(self.spec.output).write(lambda: rows(self.spec, state, self.root, tally))
        state.merged = {"output": out_fp, "rows": tally.rows, "ok": tally.ok, "failed": tally.failed,
                        "at": self.clock()}
        self.store.save(state)
        log.info("merged", output=self._output_name(), rows=tally.rows, ok=tally.ok, failed=tally.failed)
        return True

    def _summary(self, state: State) -> Summary:
        merged = state.merged or {}
        summary = Summary(merged.get("rows", 0), merged.get("ok", 0), merged.get("failed", 0),
                          self._output_name())
        limit = self.spec.output.max_failed
        allowed = math.floor(limit * summary.records) if isinstance(limit, float) else limit
        if summary.failed > allowed:
            raise RunFailed(f"{summary.failed:,} of {summary.records:,} records failed (output.max_failed allows "
                            f"{allowed:,}); their rows in {summary.output} carry the errors")
        return summary

    def _output_name(self) -> str:
        return self.spec.output.path or self.spec.output.table or "?"

    def _output_exists(self) -> bool:
        path = self.spec.output.path
        if not path or "://" in path:
            return True  # not worth a network call on every cycle
        return Path(path).exists()

    def _pause(self, plan: p.Plan, now: float) -> float:
        if self._transient_streak:  # the backend is struggling: back off, more each time in a row
            return self._backoff(self._transient_streak)
        # Poll soon after something changed, then less and less often, up to jobs.poll_interval: a small job is
        # collected within seconds, a long one costs a handful of extra polls.
        interval = self._poll_cap(min(self.spec.jobs.poll_interval, self._poll_ramp))
        self._poll_ramp = min(self._poll_ramp * 2, self.spec.jobs.poll_interval)
        if plan.wait_until is not None and not plan.steps:
            return max(0.0, plan.wait_until - now)
        if plan.wait_until is not None:
            return max(0.0, min(interval, plan.wait_until - now))
        return interval

    def _poll_cap(self, seconds: float) -> float:
        """A backend whose jobs finish in moments (the embedded emulator) is waited on for less."""
        cap = self.backend.poll_interval_cap if self._backend is not None else None
        return seconds if cap is None else min(seconds, cap)

    def _pending(self, state: State) -> str:
        busy = sum(j.status in st.IN_FLIGHT for _, j in state.jobs())
        waiting = sum(not s.done for s in state.shards) - busy
        return f"{busy} job(s) in flight, {max(0, waiting)} shard(s) waiting"


def cancel(spec: Spec, backends: BackendFactory = open_backend) -> int:
    """Cancel the spec's running jobs and mark the run cancelled; returns how many jobs were cancelled."""
    store = state_store(spec)
    with store.lock():
        state = store.load()
        if state is None:
            return 0
        live = [j for _, j in state.jobs() if j.name and j.status in st.IN_FLIGHT]
        if live:
            backend = backends(spec, store.dir)
            try:
                for job in live:
                    backend.cancel(str(job.name))
                    log.info("job cancelled", job=job.name)
            finally:
                backend.close()
        state.cancelled_at = time.time()
        store.save(state)
        return len(live)

