"""``batchflow cancel``: ask the service to cancel a spec's jobs, and record what it then says of each.

Nothing is stopped for good: a later ``run`` collects what the cancelled jobs answered and sends the rest in new
jobs (a cancel by the user does not count against ``retry.job_attempts``); a cancel of a finished spec changes
nothing.
"""

from __future__ import annotations

from batchflow import logs
from batchflow.execute.runner import Runner
from batchflow.spec.spec import Spec
from batchflow.state import state as st

log = logs.get_logger(__name__)


def cancel(spec: Spec) -> int:
    """Cancel the spec's running jobs under its lock; returns how many."""
    runner = Runner(spec)
    with runner.store.lock():
        try:
            return cancel_jobs(runner)
        finally:
            runner.path.close()


def cancel_jobs(runner: Runner) -> int:
    """Cancel every job of the saved state that may be running; returns how many were asked to cancel."""
    state = runner.store.load()
    if state is None:
        return 0
    live = [j for _, j in state.jobs() if j.status in (st.SUBMITTING, *st.REMOTE)]
    for job in live:
        if job.name is None:  # "submitting": it may exist; the service knows
            info = runner.path.jobs.find(job.display_name)
            if info is None:
                job.status = st.STAGED if job.file else st.WRITTEN
                continue
            runner.record(job, info)
        if job.status in st.REMOTE:
            runner.path.jobs.cancel(str(job.name))
            job.cancel_requested = True
            log.info("job cancelled", job=job.name)
    named = [str(j.name) for j in live if j.name and j.cancel_requested]
    if named:
        infos = runner.path.jobs.poll(named)
        for job in live:
            if job.name in infos:
                runner.record(job, infos[str(job.name)])
    runner.store.save(state)
    return sum(j.cancel_requested for j in live)
