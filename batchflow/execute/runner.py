"""Executes the plan, cycle after cycle: stage, submit, adopt, poll, collect, settle (retry), merge.

What the steps share lives here; what touches records is the execution path's (path.py).
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchflow import logs
from batchflow.answers.earlier import Earlier
from batchflow.answers.merge import output_fingerprint
from batchflow.backends.base import JobInfo
from batchflow.errors import (
    UNREACHABLE_FOR,
    BackendError,
    BatchflowError,
    CallTimedOut,
    DataError,
    DeadlineReached,
    OutputMissing,
    QuotaExceeded,
    RunFailed,
    SpecError,
    StateError,
    TransientError,
    UnreachableError,
)
from batchflow.execute import plan as p
from batchflow.execute.path import ExecutionPath
from batchflow.execute.paths import open_path
from batchflow.execute.threads import COLLECTIONS, CREATES, Pool, each
from batchflow.prepare.media_tally import media_tokens
from batchflow.prepare.prepare import FILE_LIST, display_name
from batchflow.request.media import may_have_media, stats_digest
from batchflow.spec import models
from batchflow.spec.limits import enqueued_tokens, spec_job_size
from batchflow.spec.models import CHARS_PER_TOKEN
from batchflow.spec.spec import Spec
from batchflow.state import cost
from batchflow.state import state as st
from batchflow.state.state import Job, Shard, State, state_store

log = logs.get_logger(__name__)

_FIRST_POLL = 1.0
_ADOPT_RECHECK = 10.0  # seconds between the two lookups of a job that may have been created


class NotFinished(BatchflowError):
    """``--no-wait`` left jobs running (or waiting out a backoff): run again later."""

    exit_code = 75
    label = "not finished"


@dataclass(frozen=True)
class Summary:
    records: int
    ok: int
    failed: int
    output: str
    archived: str | None = None  # where --restart put the old state
    rejected: int = 0  # bad records skipped under on_bad_record: skip (error rows, not counted by max_failed)
    jobs: int = 0  # the jobs this generation made (retries included)
    usage: dict[str, int] | None = None  # input / output / thinking tokens of the generation's answers
    cost_usd: float | None = None  # what they cost at the price table's batch prices; None: the model is not priced


def _unwatched(state: State, next_poll: float) -> None:
    """No live view: nothing to show."""



class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a run: still an interrupt (it stops every spec of the command), carrying what to tell the
    user: the jobs already created go on at the service, and are billed, whatever happens here."""


def interrupted(spec: Spec, command: str) -> Interrupted:
    """What a Ctrl-C leaves behind: the state saved, the jobs that keep running (named, the first few), and the
    two ways on: cancel them, or run again to collect them."""
    state = state_store(spec).load()
    names = [str(j.name) for _, j in state.jobs() if j.name and j.status in st.IN_FLIGHT] if state else []
    again = f"resume with `batchflow run {command}`"
    if not names:
        return Interrupted(f"the state is saved; no job is running at the service; {again}")
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    return Interrupted(f"the state is saved; {len(names)} job(s) already created keep running (and billing) at the "
                       f"service: {shown}; cancel them with `batchflow cancel {command}`, or {again}")


class Runner:
    """Drives one spec to the end (or, with ``wait=False``, as far as it goes without waiting)."""

    def __init__(self, spec: Spec, path: ExecutionPath | None = None,
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep,
                 watch: Callable[[State, float], None] | None = None, deadline: float | None = None) -> None:
        self.spec = spec
        self.watch = watch or _unwatched  # the live view: the state each cycle, and the seconds until the next
        self.store = state_store(spec)
        self.store.ensure_writable()
        self.root = self.store.dir
        self.path = path or open_path(spec, self.store)
        self.clock = clock
        self.sleep = sleep
        self.deadline = deadline  # seconds the run may take (run --deadline); None: no bound
        self._ends_at = math.inf  # clock time the deadline passes, set when run() starts
        self._timed_out: str | None = None  # the last call that timed out, named if the deadline then passes
        self._transient_streak = 0  # cycles in a row that met a transient error
        self._poll_ramp = _FIRST_POLL  # seconds until the next poll, doubling while nothing changes
        self._wait = True  # run(wait=...): an unreachable API ends a --no-wait run at once
        self._unreachable_since = 0.0  # when the API was first found unreachable, in a row
        self._listed = False  # this run listed the service for jobs the state has no record of
        self._quota_full: int | None = None  # jobs at the service when a create met a 429
        self._first_gen = 1  # the generation a state made from nothing starts at (after --restart: past the old)
        self._budget_wait: str | None = None  # why a job was not created this cycle (over budget:)
        self._stage = False
        # finished jobs' outputs, collected beside the cycle, by (generation, unit, job)
        self._collections: Pool[tuple[int, int, int]] = Pool(COLLECTIONS, "collect")

    def run(self, wait: bool = True, restart: bool = False, retry_errors: bool = False) -> Summary:
        self._wait = wait
        self._ends_at = self.clock() + self.deadline if self.deadline is not None else math.inf
        self._stage = True  # a run stages each unit while it prepares the rest (load_or_prepare only prepares)
        with self.store.lock():
            try:
                archived = None
                if restart:
                    archived = self._archive(wait)
                state = self.current(wait, retry_errors)
                summary = self._drive(state, wait)
                return dataclasses.replace(summary, archived=archived)
            except KeyboardInterrupt:  # Ctrl-C or SIGTERM: end now; what a collection was doing is done again
                self._collections.close(wait_for_running=False)
                raise
            finally:
                self._collections.close()
                self.path.close()

    def load_or_prepare(self) -> State:
        """The saved state, or the first generation, made now (the benchmark times this)."""
        try:
            return self.current(wait=False)
        finally:
            self.path.close()

    def current(self, wait: bool = True, retry_errors: bool = False) -> State:
        """The generation to drive: the saved one while it still matches the spec and the input, else a new one
        planned from the answers kept so far (after every job already created is collected)."""
        state = self.store.load()
        if state is None:
            self.path.check_output()
            return self._new_generation(None, self._first_gen, retry_errors)
        if not self.path.recurring:
            return self._same_input_only(state)
        try:
            stat = self.path.source_stat()
        except DataError as exc:  # the parts hold every request already: the input is not needed again
            log.warning("the input is gone; going on from the saved state", error=str(exc))
            return state
        retry = self.errors_to_send(state, retry_errors)
        # a spec whose requests name files reads them too: no stat of the source covers their bytes, so the files
        # the generation read are stat-ed again; one that changed (or a list it could not keep) renders every record
        # again (their content is in each request's digest), and only what changed is sent
        names_files = may_have_media(self.spec)
        if state.fingerprint == self.path.fingerprint() and state.source.get("stat") == stat and not retry \
                and self.files_unchanged(self.spec, state, self.root):
            return state
        state = self._settle_and_keep(state, wait)
        new = self._new_generation(state, state.gen + 1, retry_errors, save=False)
        if not retry and state.done and new.fingerprint == state.fingerprint and new.source["content"] == \
                state.source.get("content") and not new.shards:
            if names_files:  # the files' list and stats as they are now, for the next run's look
                self._keep_file_stats(new, state)
            shutil.rmtree(self.root / new.gen_dir, ignore_errors=True)  # touched or copied, not changed
            state.source["stat"] = stat
            self.store.save(state)
            return state
        self.store.save(new)
        self.store.prune({new.gen, state.gen})  # a generation left unfinished before `state` points nowhere now
        log.info("planned anew", gen=new.gen, **{k: v for k, v in new.diff.items() if k != "examples" and v})
        return new

    @staticmethod
    def files_unchanged(spec: Spec, state: State, root: Path) -> bool:
        """Whether every local file the generation's requests read has the size and mtime it had then (a spec whose
        requests read no file: yes; one whose generation could not list them all: no)."""
        if not may_have_media(spec):
            return True
        recorded = state.source.get("files")
        return bool(recorded) and stats_digest(root / state.gen_dir / FILE_LIST) == recorded

    def _keep_file_stats(self, new: State, state: State) -> None:
        """A new generation found the same requests as ``state``: its list of files (and their stats) goes to
        ``state``, whose own may be out of date (a file touched, not changed)."""
        listed = self.root / new.gen_dir / FILE_LIST
        if new.source.get("files") and listed.exists():
            listed.replace(self.root / state.gen_dir / FILE_LIST)
            state.source["files"] = new.source["files"]
        else:
            state.source.pop("files", None)

    @staticmethod
    def errors_to_send(state: State, retry_errors: bool) -> int:
        """Records of a finished generation whose failure may pass now (or every failure, with --retry-errors)."""
        if state.answers is None or not (state.parts or state.answers.get("table")):  # files, or a kept table
            return 0
        return int(state.answers.get("retry", 0)) + (int(state.answers.get("kept_errors", 0)) if retry_errors else 0)

    def _same_input_only(self, state: State) -> State:
        try:
            current = self.path.fingerprint()
        except DataError as exc:
            log.warning("the input is gone; going on from the saved state", error=str(exc))
            return state
        if state.fingerprint != current:
            raise StateError(f"{self.root}: the state was planned from another version of this spec or of its "
                             "input; run with --restart to start over (the old state is kept beside it)")
        return state

    def _new_generation(self, state: State | None, gen: int, retry_errors: bool, save: bool = True) -> State:
        self._check_model()
        earlier = None
        if state is not None and state.answers:
            earlier = Earlier(state.answers, self.root, tuple(state.parts), state.fingerprint)
        new = self.path.prepare(self.root, gen, earlier, retry_errors, stage=self._stage)
        if save:
            self.store.save(new)
        self._staging_timed_out()
        return new

    def _staging_timed_out(self) -> None:
        """An upload that timed out while preparing (the state is saved): ``--no-wait`` ends on it now, exit 75
        naming the call, rather than wait on the same peer again at the stage step; a waiting run goes on, and
        names it if its deadline then passes."""
        timed_out = self.path.staging_timed_out
        if timed_out is None:
            return
        self._timed_out = str(timed_out)
        if not self._wait:
            raise timed_out

    def _check_model(self) -> None:
        """Ask the service about the model before anything is prepared or staged (``models.get``): a model it does
        not know, or that runs no batch jobs, is a spec error (exit 2) naming the nearest known models. A service
        that cannot be asked now leaves only a warning: the cycle meets it with its own handling."""
        spec = self.spec
        spec_job_size(spec)  # the spec's own mistakes first: they need no service
        try:
            problem = self.path.jobs.model_problem(spec.model, spec.task)
        except CallTimedOut as exc:  # a hung service: --no-wait ends now (exit 75); a waiting run's cycle meets it
            if not self._wait:
                raise
            log.warning("the model was not checked at the service", model=spec.model, reason=str(exc))
            return
        except BatchflowError as exc:  # no credentials, unreachable ...: advice only; the cycle meets the cause itself
            log.warning("the model was not checked at the service", model=spec.model, reason=str(exc))
            return
        if problem is not None:
            raise SpecError(f"{spec.where('model')}: model: {problem}"
                            + models.nearest_hint(spec.model, spec.backend.type, spec.task))

    def _settle_and_keep(self, state: State, wait: bool) -> State:
        """Collect every job already created (they are paid for), then keep the generation's answers."""
        while True:
            self._still_allowed()
            plan = p.make_plan(state, self.clock(), self.spec.jobs.max_concurrent, "", settle_only=True)
            if plan.finished:
                break
            progressed = self._cycle(plan, state)
            if progressed and not self._transient_streak:
                continue
            if self._collections.running():
                self._collections.wait(self._bounded(self._pause(plan, self.clock())))
                continue
            if not wait:
                raise NotFinished(f"{self._live(state)} job(s) of the previous plan still running; they are "
                                  "collected before the spec's changes are planned; run again later")
            self.sleep(self._bounded(self._pause(plan, self.clock())))
        if state.answers is None or not state.answers.get("complete", True):
            self._keep(state)
        return state

    def _archive(self, wait: bool) -> str | None:
        state = self.store.load()
        if state is not None and state.live:
            self._settle_and_keep(state, wait)  # paid for: collected before it is put aside
        self._first_gen = state.gen + 1 if state is not None else 1  # new display names: nothing old is adopted
        old = self.store.archive()
        if old:
            log.info("restarting: the old state and its kept answers are put aside", archived=old)
        return old

    def _drive(self, state: State, wait: bool) -> Summary:
        out_fp = output_fingerprint(self.spec)
        cost.check_plan(self.spec, state)
        while True:
            self._still_allowed(state)
            now = self.clock()
            self._budget_wait = None
            plan = p.make_plan(state, now, self.spec.jobs.max_concurrent, out_fp, self.path.output_exists(),
                               stuck_after=self.spec.jobs.stuck_after, token_room=self._token_room(state))
            if plan.finished:
                self.path.finished()
                self.watch(state, 0.0)
                return self._summary(state)
            streak = self._transient_streak
            progressed = self._cycle(plan, state)
            if not progressed:
                self._stop_if_budget_reached(state)
            if self._transient_streak == streak:
                self._transient_streak = 0  # a cycle without a transient error ends the streak
                self._unreachable_since = 0.0
            if progressed and not self._transient_streak:
                self._poll_ramp = _FIRST_POLL
                continue
            if not wait and not self._collections.running():
                raise NotFinished(f"{self._pending(state)}; run again later")
            pause = self._bounded(self._pause(plan, now))
            self.watch(state, pause)
            if self._collections.running():  # the cycle goes on as soon as a collection ends
                self._collections.wait(pause)
            else:
                self.sleep(pause)

    def _still_allowed(self, state: State | None = None) -> None:
        """Between steps: a gs:// state's lease still held (else ``LeaseLost``, exit 75, nothing more written or
        created), and the run's deadline not passed (else ``DeadlineReached``, exit 75, the state as it stands)."""
        self.store.check()
        if self.clock() < self._ends_at:
            return
        why = f"; the last call that timed out: {self._timed_out}" if self._timed_out else ""
        where = f"{self._pending(state)}; " if state is not None else ""
        raise DeadlineReached(f"the run's deadline ({self.deadline:g} s, run --deadline) passed{why}; {where}the "
                              "state is saved, the next run picks up")

    def _bounded(self, pause: float) -> float:
        """A pause cut to end by the run's deadline, and to look at a gs:// lease once a renewal interval."""
        cap = self.store.check_every
        return max(0.0, min(pause, self._ends_at - self.clock(), cap if cap is not None else math.inf))

    def _cycle(self, plan: p.Plan, state: State) -> bool:
        """One pass over the plan: the collections that ended applied, each step taken, the creates together."""
        progressed = self._collected(state)
        creates = [step for step in plan.steps if isinstance(step, p.Submit)]
        for step in plan.steps:
            if not isinstance(step, p.Submit):
                progressed |= self._execute(step, state)
        return self._submit_all(state, creates) or progressed

    def _stop_if_budget_reached(self, state: State) -> None:
        """Jobs wait for the budget; once no created job is left to bring their actual cost in, the run stops."""
        if self._budget_wait is None or any(j.status in st.LIVE for _, j in state.jobs()):
            return
        waiting = sum(not s.done for s in state.shards)
        raise cost.BudgetReached(f"budget reached: the next job would bring committed spend to {self._budget_wait}; "
                                 f"{waiting} unit(s) not submitted, the state is kept (raise the budget and run "
                                 "again to go on)")

    def _execute(self, step: p.Step, state: State) -> bool:
        return self._guarded(type(step).__name__, self._dispatch, step, state)

    def _dispatch(self, step: p.Step, state: State) -> bool:
        match step:
            case p.Adopt(shard, n):
                return self._adopt(state, state.shards[shard].jobs[n - 1])
            case p.Poll(jobs):
                return self._poll(state, [state.shards[s].jobs[n - 1] for s, n in jobs])
            case p.Unstick(shard, n):
                return self._unstick(state, state.shards[shard], state.shards[shard].jobs[n - 1])
            case p.Collect(shard, n):
                return self._collect(state, state.shards[shard], state.shards[shard].jobs[n - 1])
            case p.Settle(shard):
                return self._settle(state, state.shards[shard])
            case p.Keep():
                return self._keep(state)
            case p.Merge():
                return self._merge(state, output_fingerprint(self.spec))
        return False  # Submit: the cycle's creates go together (_submit_all)

    def _guarded(self, step: str, call: Callable[..., bool], *args: Any) -> bool:
        """``call(*args)``, with the service's passing troubles counted and backed off from (False then)."""
        try:
            return call(*args)
        except CallTimedOut as exc:  # a hung peer, past the call's own retries
            if not self._wait:
                raise
            self._timed_out = str(exc)
            self._transient_streak += 1
            log.warning("a call timed out; will retry", step=step, error=str(exc),
                        retry_in=self._backoff(self._transient_streak))
        except UnreachableError as exc:
            now = self.clock()
            self._unreachable_since = self._unreachable_since or now
            if not self._wait or now - self._unreachable_since >= UNREACHABLE_FOR:
                raise RunFailed(f"{exc}; check {self.spec.where('backend')} (base_url, network)") from exc
            self._transient_streak += 1
            log.warning("the batch API cannot be reached; will retry", step=step, error=str(exc),
                        gives_up_in=round(self._unreachable_since + UNREACHABLE_FOR - now))
        except TransientError as exc:
            self._transient_streak += 1
            log.warning("transient error; will retry", step=step, error=str(exc),
                        retry_in=self._backoff(self._transient_streak))
        return False

    def _adopt_unrecorded(self, state: State) -> bool:
        """Before this run's first create: the jobs the service holds under the display names about to be used.

        A state lost (a container that keeps no files) or restored from an old copy makes the same generations,
        units and display names again; one paged list finds what was created under them, which is then tracked,
        collected or retried, never created twice."""
        waiting = {j.display_name: j for _, j in state.jobs() if j.status in (st.WRITTEN, st.STAGED)}
        found = self.path.jobs.find_many(set(waiting)) if waiting else {}
        self._listed = True  # not before: a list that failed is made again before any create
        for name, info in found.items():
            log.info("job adopted: it exists at the service, the state had no record of it", job=info.name,
                     display_name=name)
            self.record(waiting[name], info)
        if found:
            self.store.save(state)
        return bool(found)

    def _submit_all(self, state: State, steps: list[p.Submit]) -> bool:
        """Create the jobs of the plan's Submit steps: each admitted by the budget, staged if it is not yet, and
        saved "submitting", one after another; then created, ``CREATES`` at a time."""
        if not steps:
            return False
        if not self._listed:
            adopted = self._guarded("Submit", self._adopt_unrecorded, state)
            if adopted or not self._listed:
                return adopted  # the plan changed (make it again), or the list is to be tried again
        ready = [(state.shards[step.shard], state.shards[step.shard].jobs[step.job - 1]) for step in steps]
        marked = [(shard, job) for shard, job in ready if self._guarded("Submit", self._mark, state, job)]
        if not marked:
            return False
        self.store.save(state)  # "submitting" before create: a crash from here on adopts instead of creating
        outcomes = each(marked, lambda unit: self.path.create(*unit), CREATES)
        created = [(shard, job, info) for (shard, job), info in outcomes if isinstance(info, JobInfo)]
        for shard, job, info in created:
            job.created_at = self.clock()
            self.record(job, info)
            log.info("job submitted", shard=shard.index, job=info.name, requests=job.count, attempt=job.n)
        refused = [(job, exc) for (_, job), exc in outcomes if isinstance(exc, BackendError)]
        for job, _ in refused:
            job.status = st.STAGED  # the service said no: not created, staged as it was
        if created or refused:
            self.store.save(state)
        for (shard, job), exc in outcomes:
            if isinstance(exc, Exception) and not isinstance(exc, BackendError):
                self._guarded("Submit", self._not_created, state, shard, job, exc)
        if refused:
            raise refused[0][1]
        return bool(created)

    def _mark(self, state: State, job: Job) -> bool:
        """Whether ``job`` is to be created now; if so it is staged (when it is not yet) and marked "submitting"."""
        if job.status not in (st.WRITTEN, st.STAGED):
            return False  # adopted since this cycle's plan was made
        if self.spec.budget.capped and self._collections.running():
            return False  # a finished job's actual cost is being collected: the budget decides with it
        self._budget_wait = self._budget_wait or cost.admits(self.spec, state, job)
        if self._budget_wait is not None:
            return False  # waits: a job in flight may finish below its estimate and make room
        if job.status == st.WRITTEN:
            try:
                job.file = self.path.stage(job)
            except QuotaExceeded as exc:  # the Files API's storage is full: backpressure, as for a create
                return self._no_room(state, job, exc)
            job.status = st.STAGED
            self.store.save(state)
        job.status = st.SUBMITTING  # counted as committed spend by the budget check of the next job
        return True

    def _no_room(self, state: State, job: Job, exc: QuotaExceeded) -> bool:
        """A job whose staging would pass the Files API's storage (its media): it waits, written, until collected
        jobs' media are deleted; with nothing of this spec in flight to wait for, the error is the run's."""
        if not any(j.status in st.LIVE for _, j in state.jobs()):
            raise exc
        log.info("waiting for room in the Files API", display_name=job.display_name, error=str(exc),
                 until="a collected job's media are deleted")
        job.not_before = self.clock() + self._poll_cap(self.spec.jobs.poll_interval)
        self.store.save(state)
        return False

    def _not_created(self, state: State, shard: Shard, job: Job, exc: Exception) -> bool:
        """A create that met the quota, or a passing error: the job stays "submitting", looked up by name before it
        is created again."""
        if not isinstance(exc, QuotaExceeded):
            raise exc  # counted and backed off from by _guarded
        # backpressure, not a failure: no more creates until a job finishes
        self._quota_full = sum(j.status in st.REMOTE for _, j in state.jobs())
        log.info("the service's quota is full (429 on create): waiting for a job to finish", shard=shard.index,
                 display_name=job.display_name, in_flight=self._quota_full, error=str(exc))
        job.not_before = self.clock() + self._poll_cap(self.spec.jobs.poll_interval)
        self.store.save(state)
        return False

    def _adopt(self, state: State, job: Job) -> bool:
        info = self.path.jobs.find(job.display_name)
        if info is None and job.lookups == 0:
            # A create sent just before a crash may land, or a list may lag: look once more before creating.
            job.lookups = 1
            log.info("job not found; looking again before creating it", display_name=job.display_name)
            job.not_before = self.clock() + self._poll_cap(min(_ADOPT_RECHECK, self.spec.jobs.poll_interval))
        elif info is None:
            job.status, job.lookups = (st.STAGED if job.file else st.WRITTEN), 0
        else:
            log.info("job adopted", job=info.name, display_name=job.display_name)
            self.record(job, info)
        self.store.save(state)
        return True

    def _poll(self, state: State, jobs: list[Job]) -> bool:
        infos = self.path.jobs.poll([str(j.name) for j in jobs])
        changed = [job for job in jobs if infos[str(job.name)].status != job.status]
        moved = [job for job in jobs if infos[str(job.name)].done != job.done_count]  # progress within a state
        for job in {id(j): j for j in (*changed, *moved)}.values():
            self.record(job, infos[str(job.name)])
        if changed or moved:
            self.store.save(state)
        return bool(changed)

    def _unstick(self, state: State, shard: Shard, job: Job) -> bool:
        """Cancel a job the service has reported no change of for ``jobs.stuck_after``: what it finished is still
        collected, the rest goes in a new job (a job attempt, as for an expired one)."""
        since = job.unchanged_since(self.clock())
        log.warning("job stuck: cancelling it; its unanswered requests go in a new job", shard=shard.index,
                    job=job.name, state=job.status, unchanged_for=round(self.clock() - since),
                    stuck_after=self.spec.jobs.stuck_after)
        self.path.jobs.cancel(str(job.name))
        job.stuck = True
        job.progress_at = self.clock()  # a cancel the service ignores is sent again after another stuck_after
        self.store.save(state)
        return True

    def _token_room(self, state: State) -> int | None:
        """Input tokens that may still be enqueued (gemini: the model's enqueued-token quota, ``limits.py``); none
        after a 429 on create until one of the jobs then in flight has finished."""
        if self._quota_full is not None:
            if sum(j.status in st.REMOTE for _, j in state.jobs()) >= self._quota_full > 0:
                return 0
            self._quota_full = None
        limit = self.spec.jobs.max_enqueued_tokens
        if limit is None and self.spec.backend.type == "gemini":
            limit = enqueued_tokens(self.spec.model)
        if limit is None:
            return None
        return limit - sum(j.tokens for _, j in state.jobs() if j.status in st.IN_FLIGHT)

    def record(self, job: Job, info: JobInfo) -> None:
        """What the service says of a job, into the state's job."""
        if info.status != job.status or info.done != job.done_count:
            job.progress_at, job.done_count = self.clock(), info.done
        job.name, job.status, job.output, job.error = info.name, info.status, info.output, info.error
        if info.status in st.FINISHED:
            job.ended = info.status
            job.finished_at = self.clock()
            log.info("job finished", job=info.name, state=info.status, error=info.error)

    def _collect(self, state: State, shard: Shard, job: Job) -> bool:
        """Start collecting a finished job on the pool (``_collected`` applies the outcome); no progress yet."""
        if job.status in st.FINISHED:  # not collected by the cycle's start, after this plan was made
            self._collections.start((state.gen, shard.index, job.n), lambda: self.path.collect(shard, job))
        return False

    def _collected(self, state: State) -> bool:
        """The collections that ended, applied: each job collected, or its output looked for again later, or the
        error raised (after the others are applied)."""
        progressed = False
        ended = [(key, error) for key, error in self._collections.finished() if key[0] == state.gen]
        for (_, index, n), error in sorted(ended, key=lambda item: item[1] is not None):
            shard = state.shards[index]
            job = shard.jobs[n - 1]
            progressed |= self._guarded("Collect", self._apply_collected, state, shard, job, error)
        return progressed

    def _apply_collected(self, state: State, shard: Shard, job: Job, error: BaseException | None) -> bool:
        if isinstance(error, OutputMissing):
            return self._output_missing(state, shard, job, error)
        if error is not None:
            raise error
        job.status = st.COLLECTED
        log.info("job collected", shard=shard.index, job=job.name, ok=job.ok, failed=job.failed)
        self.store.save(state)
        return True

    def _output_missing(self, state: State, shard: Shard, job: Job, exc: OutputMissing) -> bool:
        """A succeeded job whose output is not there: looked for again with backoff for ``jobs.output_wait`` (the
        service may publish it late), then counted lost: its requests go again in a new job."""
        now = self.clock()
        since = job.finished_at or now
        job.output_looks += 1
        if now - since < self.spec.jobs.output_wait:
            job.not_before = now + min(self._backoff(job.output_looks), since + self.spec.jobs.output_wait - now)
            log.warning("job output not there yet; will look again", shard=shard.index, job=job.name,
                        reason=str(exc), looks=job.output_looks, retry_in=round(job.not_before - now, 1))
            self.store.save(state)
            return False
        log.error("job output lost: its requests are sent again", shard=shard.index, job=job.name, reason=str(exc),
                  requests=job.count)
        self.path.collect_lost(shard, job, f"the output of {job.name} is missing: {exc}")
        job.status = st.COLLECTED
        self.store.save(state)
        return True

    def _settle(self, state: State, shard: Shard) -> bool:
        n = len(shard.jobs) + 1
        nxt = self.path.next_job(shard, n)
        if nxt is None:
            shard.done = True
        else:
            kind = "retry" if shard.jobs[-1].ended == st.SUCCEEDED else "resubmit"
            sent = self.root / nxt.input
            tokens = sent.stat().st_size // CHARS_PER_TOKEN + media_tokens(self.spec, sent) if nxt.file is None else 0
            shard.jobs.append(Job(n=n, input=nxt.input, count=nxt.count, digest=nxt.digest, kind=kind, tokens=tokens,
                                  file=nxt.file, status=st.STAGED if nxt.file else st.WRITTEN,
                                  display_name=display_name(self.spec.name, state.gen, shard.index, n, nxt.digest),
                                  not_before=self.clock() + self._backoff(n - 1)))
            log.info("retrying requests", shard=shard.index, requests=nxt.count, kind=kind, attempt=n)
        self.store.save(state)
        return True

    def _backoff(self, k: int) -> float:
        b = self.spec.retry.backoff
        return float(min(b.max, b.initial * b.multiplier ** (k - 1)))

    def _keep(self, state: State) -> bool:
        # Answers kept before every unit settled (the plan is about to change) are the next generation's to plan
        # from, but not final: should this generation go on after all, they are kept again once it is done, and
        # the earlier generation they point into stays until then.
        state.answers = {**self.path.keep(state), "complete": state.done}
        self.store.save(state)
        if state.previous and state.done:
            self.store.drop_generation(int(state.previous.get("gen", 0)))
        log.info("answers kept", gen=state.gen, ok=state.answers.get("ok"), retry=state.answers.get("retry"))
        return True

    def _merge(self, state: State, out_fp: str) -> bool:
        records, ok = self.path.merge(state)
        state.merged = {"output": out_fp, "rows": records, "ok": ok, "failed": records - ok, "at": self.clock()}
        self.store.save(state)
        log.info("merged", output=self.path.output_name(), rows=records, ok=ok, failed=records - ok)
        return True

    def _summary(self, state: State) -> Summary:
        merged = state.merged or {}
        # bad records skipped under on_bad_record: skip are the user's choice; those over the model's limit fail
        rejected = int(state.diff.get("rejected", 0)) - int(state.diff.get("over_limit", 0))
        jobs = sum(j.name is not None for _, j in state.jobs())
        spent = cost.spend(self.spec, state)
        summary = Summary(merged.get("rows", 0), merged.get("ok", 0), merged.get("failed", 0),
                          self.path.output_name(), rejected=rejected, jobs=jobs, usage=spent.actual.as_dict(),
                          cost_usd=spent.usd(spent.actual))
        limit = self.spec.output.max_failed
        allowed = math.floor(limit * summary.records) if isinstance(limit, float) else limit
        if summary.failed - rejected > allowed:
            retry = self.errors_to_send(state, False)
            again = f"; the next run sends the {retry:,} that may pass again" if retry else ""
            raise RunFailed(f"{summary.failed - rejected:,} of {summary.records:,} records failed (output.max_failed "
                            f"allows {allowed:,}); their rows in {summary.output} carry the errors{again}")
        return summary

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
        cap = self.path.jobs.poll_interval_cap
        return seconds if cap is None else min(seconds, cap)

    def _live(self, state: State) -> int:
        return sum(j.status in st.LIVE for _, j in state.jobs())

    def _pending(self, state: State) -> str:
        busy = sum(j.status in st.IN_FLIGHT for _, j in state.jobs())
        waiting = sum(not s.done for s in state.shards) - busy
        return f"{busy} job(s) in flight, {max(0, waiting)} shard(s) waiting"
