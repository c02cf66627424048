"""What ``validate`` and ``plan`` print, and the state summary ``status`` shows; calls no API but ``models.get``."""

from __future__ import annotations

import dataclasses
import itertools
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from batchflow import logs
from batchflow.answers.earlier import Earlier
from batchflow.answers.keep import keep
from batchflow.answers.merge import output_fingerprint
from batchflow.backends.base import Backend, MediaStaging
from batchflow.backends.registry import open_backend
from batchflow.errors import BatchflowError, DataError, SpecError
from batchflow.execute import plan as p
from batchflow.execute.runner import Runner
from batchflow.prepare.media_tally import MediaTally, tally
from batchflow.prepare.prepare import check_not_empty, fingerprint, prepare, rendered
from batchflow.request.media import may_have_media
from batchflow.sources.registry import open_source
from batchflow.spec import models
from batchflow.spec.limits import spec_job_size
from batchflow.spec.spec import Spec, load_spec
from batchflow.state import cost
from batchflow.state import state as st
from batchflow.state.state import State, state_store

log = logs.get_logger(__name__)




def _size(spec: Spec) -> tuple[int, int]:
    size = spec_job_size(spec)
    return size.max_requests, size.max_bytes


def _reads_locally(spec: Spec) -> bool:
    return spec.source.type == "inline" or (spec.source.type == "files" and "://" not in (spec.source.path or ""))


def validate_one(path: Path, records: int, allow_unset_env: bool = False) -> str:
    """Schema, templates, limits and the first records rendered; raises on the first problem. Unset variables
    allowed are noted, one line each; a source that names one is not read (its path is not known here)."""
    spec = load_spec(path, allow_unset_env=allow_unset_env)
    notes = "".join(f"\n  note: {note} (allowed by --allow-unset-env)" for note in spec.unset_env.values())
    return _validated(path, spec, records) + notes


def _validated(path: Path, spec: Spec, records: int) -> str:
    _size(spec)
    cost.check_priced(spec)
    if spec.output.type == "files":  # its format, with no filesystem opened: validate touches no bucket
        from batchflow.destinations.files import writer_for

        try:
            writer_for(spec.output)
        except SpecError as exc:
            raise SpecError(spec.at("output", str(exc))) from None
    if spec.source.native:  # the templates must be SQL: checked now, with no network
        from batchflow.execute.native_sql import compile_spec

        compile_spec(spec)
    if not _reads_locally(spec):
        return f"ok: {path} (the {spec.source.type} source is not read by validate)"
    if any(dotted.startswith("source.") for dotted in spec.unset_env):
        return f"ok: {path} (the source is not read: it names an unset variable)"
    sample = list(itertools.islice(rendered(spec), max(records, 1)))  # one at least: is the input empty?
    if not sample:
        check_not_empty(spec)
        return f"ok: {path} (no records, as source.allow_empty allows)"
    sample = sample[:records]
    keys = ", ".join(repr(r.key) for r in sample)
    limit = models.prompt_bytes(spec.model, spec.backend.type, spec.task,
                                    (spec.embed_config or {}).get("auto_truncate"))
    over = [f"\n  {r.record.where}: key {r.key!r}: {models.too_long(spec.model, size)}" for r in sample
            if (size := len(orjson.dumps({"key": r.key, "request": r.request}))) > limit]
    return f"ok: {path} ({len(sample)} record(s) rendered: {keys})" + "".join(over)


@dataclass(frozen=True)
class PlanReport:
    text: str
    submits: bool  # run would create jobs (``plan --exit-code``)
    data: dict[str, Any] = field(default_factory=dict)  # ``plan --json`` (README.md, "Commands and exit codes")


def plan_report(spec: Spec, retry_errors: bool = False) -> PlanReport:
    """What ``run`` would do now: the saved generation's next steps, or the difference a new one would send."""
    with tempfile.TemporaryDirectory(prefix="batchflow-plan-") as scratch:  # the local backend's emulator data
        backend = _service(spec, Path(scratch))
        try:
            return _report(spec, retry_errors, backend)
        finally:
            if backend is not None:
                backend.close()


def _report(spec: Spec, retry_errors: bool, backend: Backend | None) -> PlanReport:
    store = state_store(spec, view=True)
    state = store.load()
    if spec.source.native:  # the records stay in BigQuery: counted there, against the answers kept there
        return _native_plan(spec, state, retry_errors)
    if state is None:
        return _diff_plan(spec, None, store.dir, retry_errors, backend)
    try:
        stat = open_source(spec.source).fingerprint()
    except DataError:  # the input is gone: the state holds every request already, as `run` finds
        return _plan_of(spec, state)
    retry = Runner.errors_to_send(state, retry_errors)
    if state.fingerprint == fingerprint(spec) and state.source.get("stat") == stat and not retry \
            and Runner.files_unchanged(spec, state, store.dir):
        return _plan_of(spec, state)
    return _diff_plan(spec, state, store.dir, retry_errors, backend)


def _diff_plan(spec: Spec, state: State | None, root: Path, retry_errors: bool,
               backend: Backend | None) -> PlanReport:
    """Plan the next generation in a scratch directory, report it, and forget it."""
    with tempfile.TemporaryDirectory(prefix=".plan-", dir=root if root.exists() else None) as scratch:
        base = Path(scratch)
        earlier = None
        if state is not None:
            kept = state.answers or keep(spec, state, root, out_root=base)
            earlier = Earlier(kept, root, tuple(state.parts), state.fingerprint) if state.answers else Earlier(
                kept, base)  # answers kept into the scratch directory: compared by the index alone
        new = prepare(spec, base, (state.gen if state else 0) + 1, earlier, retry_errors)
        sample = None
        if new.shards:
            with open(base / new.shards[0].requests, "rb") as fh:
                sample = fh.readline().decode().rstrip("\n")
        rejected = _first_rejects(base / new.gen_dir / "rejects.jsonl")
        billed = _as_billed(new, base, backend)
        media = _media(spec, new, base, backend)
    lines = [f"spec {spec.name}: " + ("nothing run yet" if state is None else
                                      f"the input or the spec changed since generation {state.gen}")]
    if state is not None:
        changed = sorted(k for k in {*state.spec, *new.spec} if state.spec.get(k) != new.spec.get(k))
        if changed and state.spec:
            lines.append("  spec fields changed: " + ", ".join(changed))
        live = sum(j.status in st.LIVE for _, j in state.jobs())
        if live:
            lines.append(f"  {live} job(s) already created are collected first (their answers are kept; below, "
                         "their records count as not answered yet)")
    d = new.diff
    lines.append(f"  records: {new.records:,}: {d['new']:,} new, {d['changed']:,} changed, {d['unchanged']:,} "
                 f"unchanged (answers reused), {d['retried']:,} retried after an error, {d['removed']:,} removed, "
                 f"{d['rejected']:,} rejected")
    for kind, keys in sorted(d.get("examples", {}).items()):
        if kind != "unchanged":
            more = ", ..." if d[kind] > len(keys) else ""
            lines.append(f"    {kind}: " + ", ".join(repr(k) for k in keys) + more)
    lines += [f"    rejected: record {ordinal}: {message}" for ordinal, message in rejected]
    max_requests, max_bytes = _size(spec)
    sent = sum(s.count for s in new.shards)
    size = sum(s.bytes for s in new.shards)
    distinct = sum(s.count for s in billed.shards)
    asked = f" ({distinct:,} distinct, as {spec.backend.type} answers and bills them)" if distinct != sent else ""
    lines.append(f"  jobs to submit: {len(new.shards)}" + (f" ({sent:,} requests{asked}; at most {max_requests:,} "
                 f"requests and {max_bytes:,} bytes each), {spec.jobs.max_concurrent} at a time on "
                 f"{spec.backend.type}" if new.shards else ""))
    if media is not None:
        lines.append(_media_line(media))
    lines.append(_cost_line(spec, billed, state))
    if sample:
        lines.append("  sample request: " + sample)
    cost.check_plan(spec, billed, state)
    data = {"spec": spec.name, "path": str(spec.path), "kind": "new" if state is None else "changed",
            "records": new.records, "diff": {k: v for k, v in d.items() if k != "examples"},
            "jobs_to_submit": len(new.shards), "requests": sent, "billed_requests": distinct, "bytes": size,
            "cost": _cost_data(spec, billed, state),
            "submits": bool(new.shards)}
    if media is not None:
        data["media"] = media
    return PlanReport("\n".join(lines), bool(new.shards), data)


def _media(spec: Spec, state: State, root: Path, backend: Backend | None) -> dict[str, int] | None:
    """The media the generation's requests name: parts, distinct local files and bytes, their prompt tokens (in
    the estimate's input), and where staging stands (to upload, staged already, inline); None without media."""
    if not may_have_media(spec):
        return None
    found = MediaTally()
    for shard in state.shards:
        found.add(tally(root / shard.jobs[0].input))
    staging = (backend.media_staging(found.contents) if backend is not None else
               MediaStaging(len(found.contents), found.bytes))
    return {"parts": found.parts, "files": len(found.contents), "bytes": found.bytes, "tokens": found.tokens,
            **staging.as_dict()}


def _media_line(media: dict[str, int]) -> str:
    return (f"  media: {media['parts']:,} part(s), {media['files']:,} distinct local file(s) of {media['bytes']:,} "
            f"bytes: {media['upload_files']:,} to stage ({media['upload_bytes']:,} bytes), "
            f"{media['staged_files']:,} staged already ({media['staged_bytes']:,} bytes), "
            f"{media['inline_files']:,} inline ({media['inline_bytes']:,} bytes); ~{media['tokens']:,} prompt "
            "tokens, in the input below")


def _native_plan(spec: Spec, state: State | None, retry_errors: bool) -> PlanReport:
    """A generation under way: its next steps. Else what a run would send, counted by one query in BigQuery against
    the kept answers (no table made or changed), the bytes a dry run of that query says it processes, and the
    requests' cost estimated as the runner path's plan estimates it (one grouped query: a row a job)."""
    from batchflow.execute.native_path import NativePath

    if state is not None and not p.make_plan(state, time.time(), spec.jobs.max_concurrent,
                                             output_fingerprint(spec)).finished:
        return _plan_of(spec, state)
    path = NativePath(spec)
    try:
        if state is not None and state.fingerprint == path.fingerprint() and not \
                Runner.errors_to_send(state, retry_errors) and state.source.get("stat") == path.source_stat():
            return _plan_of(spec, state)
        d, processed, new = path.preview(retry_errors, with_kept=state is not None and bool(state.answers),
                                         gen=(state.gen if state else 0) + 1)
    finally:
        path.close()
    sending = sum(s.count for s in new.shards)
    distinct = sum(s.jobs[0].count for s in new.shards)  # each job asks a request once, for every key that has it
    per_job = spec_job_size(spec).max_requests
    jobs = len(new.shards)
    asked = f", {distinct:,} distinct, as vertex answers and bills them" if distinct != sending else ""
    lines = [f"spec {spec.name}: " + ("nothing run yet" if state is None else
                                      f"the table or the spec changed since generation {state.gen}"),
             f"  records: {d['n']:,}: {d['new']:,} new, {d['changed']:,} changed, {d['kept']:,} unchanged (answers "
             f"kept in BigQuery), {d['failed']:,} retried after an error, {d['removed']:,} removed",
             f"  jobs to submit: {jobs}" + (f" ({sending:,} requests{asked}; at most {per_job:,} distinct each), "
                                            f"{spec.jobs.max_concurrent} at a time on vertex" if jobs else ""),
             _cost_line(spec, new, state),
             "  BigQuery dry run of this plan's query: " + (f"{processed:,} bytes processed" if processed is not None
                                                             else "no bytes figure given")]
    cost.check_plan(spec, new, state)
    data = {"spec": spec.name, "path": str(spec.path), "kind": "new" if state is None else "changed",
            "records": d["n"], "diff": new.diff, "jobs_to_submit": jobs, "requests": sending,
            "billed_requests": distinct, "bytes": sum(s.bytes for s in new.shards),
            "cost": _cost_data(spec, new, state), "bytes_processed": processed, "submits": bool(jobs)}
    return PlanReport("\n".join(lines), bool(jobs), data)


def _cost_line(spec: Spec, state: State, earlier: State | None = None) -> str:
    """The generation's estimated tokens and cost, and what each figure a request rests on (docs/cost.md, "The
    estimate")."""
    spent = cost.spend(spec, state, earlier)
    usd = spent.usd(spent.planned)
    money = f"${usd:,.4f}" if usd is not None else f"no price for {spec.model} on {spec.backend.type} (pricing:)"
    each = cost.per_request(spec, cost.observed(state) or cost.observed(earlier))
    return (f"  cost (estimate): {money} for ~{spent.planned.input:,} input, {spent.planned.output:,} output "
            f"({each.output:,} a request: {each.output_basis}) and {spent.planned.thinking:,} thinking tokens "
            f"({each.thinking:,} a request: {each.thinking_basis}), batch prices of {models.PRICES_TAKEN}"
            + _budget_text(spec))


def _budget_text(spec: Spec) -> str:
    caps = [f"${spec.budget.max_cost_usd:,.4f}" if spec.budget.max_cost_usd is not None else "",
            f"{spec.budget.max_input_tokens:,} input tokens" if spec.budget.max_input_tokens is not None else ""]
    return f"; budget: {', '.join(c for c in caps if c)}" if any(caps) else ""


def _cost_data(spec: Spec, state: State, earlier: State | None = None) -> dict[str, Any]:
    spent = cost.spend(spec, state, earlier)
    each = cost.per_request(spec, cost.observed(state) or cost.observed(earlier))
    return {**spent.as_dict(), "per_request": {"output": each.output, "thinking": each.thinking},
            "basis": {"output": each.output_basis, "thinking": each.thinking_basis},
            "prices_taken": models.PRICES_TAKEN,
            "budget": {"max_cost_usd": spec.budget.max_cost_usd, "max_input_tokens": spec.budget.max_input_tokens}}


def _service(spec: Spec, scratch: Path) -> Backend | None:
    """The spec's backend, asked about the model once (``models.get``): a model it does not know, or that cannot
    run batch jobs, is a spec error before anything else. A service that cannot be reached now is None: a warning,
    and the plan goes on without it (``run`` meets it)."""
    try:
        backend = open_backend(spec, scratch)
    except BatchflowError as exc:
        log.warning("the model was not checked at the service", model=spec.model, reason=str(exc))
        return None
    try:
        problem = backend.model_problem(spec.model, spec.task)
    except BatchflowError as exc:  # unreachable, no credentials here (CI)
        log.warning("the model was not checked at the service", model=spec.model, reason=str(exc))
        backend.close()
        return None
    except BaseException:
        backend.close()
        raise
    if problem is not None:
        backend.close()
        raise SpecError(f"{spec.where('model')}: model: {problem}"
                        + models.nearest_hint(spec.model, spec.backend.type, spec.task))
    return backend


def _as_billed(state: State, root: Path, backend: Backend | None) -> State:
    """The generation as the service will answer and bill it: each first job's count (and its estimated input
    tokens, in proportion) cut to the requests the backend sends (Vertex stages identical requests once). Only for
    the estimate: the state written by ``run`` keeps every record's request."""
    if backend is None:
        return state
    shards = []
    for shard in state.shards:
        job = shard.jobs[0]
        billed = backend.billed_requests(root / job.input) if job.count else 0
        tokens = job.tokens * billed // job.count if job.count else 0
        shards.append(dataclasses.replace(shard, count=billed, jobs=[dataclasses.replace(job, count=billed,
                                                                                         tokens=tokens)]))
    return dataclasses.replace(state, shards=shards)


def _first_rejects(path: Path, count: int = 5) -> list[tuple[int, str]]:
    """The first records ``prepare`` turned into error rows (unreadable, unrenderable, over the model's limit)."""
    if not path.exists():
        return []
    with open(path, "rb") as fh:
        return [(item["ordinal"], item["error"]["message"]) for item in map(orjson.loads, itertools.islice(fh, count))]


def _plan_of(spec: Spec, state: State) -> PlanReport:
    steps = p.make_plan(state, time.time(), spec.jobs.max_concurrent, output_fingerprint(spec))
    data = {"spec": spec.name, "path": str(spec.path), "records": state.records, "cost": _cost_data(spec, state)}
    if steps.finished:
        return PlanReport(f"spec {spec.name}: finished; `run` has nothing to do\n" + status_of(state), False,
                          {**data, "kind": "finished", "submits": False, "next": {}})
    cost.check_plan(spec, state)
    names = Counter(type(s).__name__ for s in steps.steps)
    todo = ", ".join(f"{n} x {k.lower()}" for k, n in names.items()) or "wait"
    submits = any(isinstance(s, p.Submit) for s in steps.steps)
    return PlanReport(f"spec {spec.name}: next: {todo}\n" + status_of(state) + "\n" + _cost_line(spec, state),
                      submits, {**data, "kind": "resume", "submits": submits, "next": {k.lower(): n for k, n in
                                                                                       names.items()}})


EXPIRY_WARNING = 36 * 3600.0  # a job this old is near the services' expiry (docs/google-apis.md, "Limits")


def status_of(state: State) -> str:
    """The generation, what it sends and reuses, jobs by status, counts, job errors, what is left."""
    jobs = state.jobs()
    by_status = Counter(j.status for _, j in jobs)
    done = sum(s.done for s in state.shards)
    d = state.diff
    lines = [f"  generation {state.gen}: {state.records:,} records, {sum(s.count for s in state.shards):,} sent "
             f"in {len(state.shards)} unit(s) ({done} done)"
             + (f"; {d.get('unchanged', 0):,} answers reused, {d.get('rejected', 0):,} rejected" if d else ""),
             "  jobs: " + (", ".join(f"{n} {k}" for k, n in sorted(by_status.items())) or "none")]
    for shard, job in jobs:
        if job.error:
            lines.append(f"  shard {shard.index} job {job.n} ({job.name}): {job.ended or job.status}: {job.error}")
    if state.answers and (state.parts or state.answers.get("table")):  # files, or the native path's kept table
        a = state.answers
        lines.append(f"  kept: {a['ok']:,} answers, {a['kept_errors']:,} failures that would come back the same; "
                     f"{a['retry']:,} failures the next run sends again")
    if state.merged:
        m = state.merged
        lines.append(f"  merged: {m['rows']:,} rows, {m['ok']:,} ok, {m['failed']:,} failed")
    now = time.time()
    for shard, job in jobs:
        if job.status in st.REMOTE and job.created_at is not None and now - job.created_at >= EXPIRY_WARNING:
            lines.append(f"  shard {shard.index} job {job.n} ({job.name}): {job.status} for "
                         f"{(now - job.created_at) / 3600:.0f} h: the service expires a job at 48 h (Gemini API) "
                         "or cancels it after 24 h of running (Vertex)")
        if job.stuck:
            lines.append(f"  shard {shard.index} job {job.n} ({job.name}): cancelled by batchflow after "
                         "jobs.stuck_after without progress; its unanswered requests are sent again")
    cancelled = sum(j.cancel_requested for _, j in jobs)
    if cancelled:
        lines.append(f"  {cancelled} job(s) cancelled with `batchflow cancel`; `run` collects what they answered "
                     "and sends the rest")
    return "\n".join(lines)
