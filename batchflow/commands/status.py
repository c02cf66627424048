"""``batchflow status``: the spec's jobs as the service reports them now, beside what the state says.

The service is the truth about jobs (a job may have finished since the last run saw it), so ``status`` asks it:
one paged list, or a get each for a few jobs (``Backend.poll``), and a list by display name for jobs left
"submitting". It only reads the state (through a view of it that takes no lock) and never writes it.
"""

from __future__ import annotations

import datetime
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from batchflow.backends.base import JobInfo
from batchflow.backends.registry import open_backend
from batchflow.commands.plan_report import EXPIRY_WARNING, status_of
from batchflow.errors import BatchflowError
from batchflow.spec import models
from batchflow.spec.spec import Spec
from batchflow.state import cost
from batchflow.state import state as st
from batchflow.state.state import Job, State, state_store

_CAUSES_READ = 50_000  # result lines read per job for errors by cause: enough to name the causes, bounded


@dataclass(frozen=True)
class StatusReport:
    text: str
    data: dict[str, Any]  # ``status --json`` (README.md, "Commands and exit codes")


def status_report(spec: Spec, offline: bool = False, clock: Callable[[], float] = time.time) -> StatusReport:
    """The state as saved and, unless ``offline``, each uncollected job as the service reports it now."""
    store = state_store(spec, view=True)
    state = store.load()
    as_of = clock()
    if state is None:
        data = {"spec": spec.name, "path": str(spec.path), "as_of": _iso(as_of), "run": False, "jobs": []}
        return StatusReport(f"spec {spec.name}: not run yet (no state in {store.dir})", data)
    infos, source = ({}, "state (--offline)") if offline else _ask_service(spec, state)
    jobs = [_job_data(shard.index, job, infos.get(job.display_name), as_of) for shard, job in state.jobs()]
    data = {"spec": spec.name, "path": str(spec.path), "as_of": _iso(as_of), "run": True, "source": source,
            "generation": state.gen, "records": state.records, "jobs": jobs,
            "counts": dict(Counter(j["state"] for j in jobs)), "kept": _kept(state), "merged": state.merged,
            "errors": _errors_by_cause(store.dir, state), "cost": _cost(spec, state)}
    return StatusReport(_text(spec, state, data), data)


def _ask_service(spec: Spec, state: State) -> tuple[dict[str, JobInfo], str]:
    """The service's word on every job not yet collected, by display name; on no answer, the state's alone."""
    if spec.backend.type == "local" and not spec.backend.base_url:
        return {}, "state (the local backend's emulator runs only inside `run`)"
    named = {str(j.name): j.display_name for _, j in state.jobs() if j.name and j.status in st.LIVE}
    unnamed = {j.display_name for _, j in state.jobs() if j.status == st.SUBMITTING and not j.name}
    if not named and not unnamed:
        return {}, "state (no job left to ask about)"
    with tempfile.TemporaryDirectory(prefix="batchflow-status-") as scratch:
        try:
            backend = open_backend(spec, Path(scratch))
            try:
                found = backend.find_many(unnamed) if unnamed else {}
                found |= {named[n]: info for n, info in backend.poll(sorted(named)).items()}
            finally:
                backend.close()
        except BatchflowError as exc:
            return {}, f"state (the service did not answer: {exc})"
    return found, "service"


def _job_data(shard: int, job: Job, info: JobInfo | None, now: float) -> dict[str, Any]:
    """One job: the service's state when it was asked, else the state file's (upper case, as a service's)."""
    service = info.state if info is not None else None
    remote = (info.status if info is not None else job.status) in st.REMOTE
    age = None if job.created_at is None else round(now - job.created_at, 1)
    return {"shard": shard, "attempt": job.n, "name": job.name or (info.name if info else None),
            "display_name": job.display_name, "state": service or (job.ended or job.status).upper(),
            "local_status": job.status, "from_service": service is not None, "requests": job.count,
            "done": info.done if info is not None and info.done is not None else job.done_count,
            "ok": job.ok, "failed": job.failed, "age_seconds": age,
            "near_expiry": remote and age is not None and age >= EXPIRY_WARNING,
            "error": (info.error if info is not None else None) or job.error}


def _kept(state: State) -> dict[str, int] | None:
    a = state.answers
    if not a or not state.parts:
        return None
    return {"ok": int(a.get("ok", 0)), "kept_errors": int(a.get("kept_errors", 0)), "retry": int(a.get("retry", 0))}


def _errors_by_cause(root: Path, state: State) -> dict[str, int]:
    """Failed requests and jobs counted by cause: a job's error, or a request's error code and message."""
    causes: Counter[str] = Counter()
    for _, job in state.jobs():
        if job.error:
            causes[f"job {job.ended or job.status}: {job.error}"] += 1
        if job.failed and job.results and (root / job.results).exists():
            causes.update(_result_causes(root / job.results))
    return dict(causes.most_common())


def _result_causes(path: Path) -> Counter[str]:
    causes: Counter[str] = Counter()
    with open(path, "rb") as fh:
        for n, line in enumerate(fh):
            if n >= _CAUSES_READ:
                break
            item = orjson.loads(line)
            error = item.get("error") or item.get("job_error")
            if error:
                causes[f"{error.get('code') or 'request'}: {str(error.get('message'))[:80]}"] += 1
    return causes


def _cost(spec: Spec, state: State) -> dict[str, Any]:
    spent = cost.spend(spec, state)
    return {**spent.as_dict(), "prices_taken": models.PRICES_TAKEN}


def _text(spec: Spec, state: State, data: dict[str, Any]) -> str:
    lines = [f"spec {spec.name}: as of {data['as_of']}, from the {data['source']}", status_of(state)]
    for job in data["jobs"]:
        if job["local_status"] == st.COLLECTED:
            continue
        age = "" if job["age_seconds"] is None else f", {_age(job['age_seconds'])} old"
        done = "" if job["done"] is None else f", {job['done']:,}/{job['requests']:,} done"
        differs = f" (the state says {job['local_status']})" if job["state"].lower() != job["local_status"] else ""
        lines.append(f"  shard {job['shard']} job {job['attempt']} {job['name'] or job['display_name']}: "
                     f"{job['state']}{differs}{done}{age}")
    lines += [f"  errors: {n:,} x {cause}" for cause, n in data["errors"].items()]
    money = data["cost"]["actual_usd"]
    tokens = data["cost"]["actual_tokens"]
    lines.append(f"  cost so far: {'unpriced' if money is None else f'${money:,.4f}'} for {tokens['input']:,} input, "
                 f"{tokens['output']:,} output and {tokens['thinking']:,} thinking tokens (collected answers)")
    return "\n".join(lines)


def _age(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min" if seconds >= 60 \
        else f"{seconds:.0f} s"


def _iso(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).isoformat(timespec="seconds")
