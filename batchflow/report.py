"""What ``validate``, ``plan`` and ``status`` print; reads only local files, calls no API."""

from __future__ import annotations

import itertools
import time
from collections import Counter
from pathlib import Path

import orjson

from batchflow import plan as p
from batchflow.errors import DataError
from batchflow.limits import JobSize, spec_job_size
from batchflow.merge import output_fingerprint
from batchflow.prepare import fingerprint, rendered
from batchflow.runner import state_store
from batchflow.sharding import ShardWriter
from batchflow.sources import open_source
from batchflow.spec import Spec, load_spec
from batchflow.state import State

_CHARS_PER_TOKEN = 4  # a rough, model-independent estimate


def _size(spec: Spec) -> tuple[int, int]:
    size = spec_job_size(spec)
    return size.max_requests, size.max_bytes


def _reads_locally(spec: Spec) -> bool:
    return spec.source.type == "inline" or (spec.source.type == "files" and "://" not in (spec.source.path or ""))


def validate_one(path: Path, records: int) -> str:
    """Schema, templates, limits and the first records rendered; raises on the first problem."""
    spec = load_spec(path)
    _size(spec)
    if spec.source.native:  # the templates must be SQL: checked now, with no network
        from batchflow.native_sql import compile_spec

        compile_spec(spec)
    if not _reads_locally(spec):
        return f"ok: {path} (the {spec.source.type} source is not read by validate)"
    sample = list(itertools.islice(rendered(spec), records))
    keys = ", ".join(repr(r.key) for r in sample)
    return f"ok: {path} ({len(sample)} record(s) rendered: {keys})"


def plan_report(spec: Spec) -> str:
    """The saved state's next steps, or, before the first run, what preparing would make."""
    store = state_store(spec)
    state = store.load()
    if spec.source.native:  # the records stay in BigQuery: the plan is the state's, never a read of the input
        return _plan_of(spec, state) if state else (f"spec {spec.name}: nothing run yet; `run` builds the requests "
                                                    "in BigQuery and submits one Vertex job per partition")
    if state is None:
        return _dry_plan(spec)
    try:
        current = fingerprint(spec, open_source(spec.source).fingerprint())
    except DataError:  # the input is gone: the state holds every request already, as `run` finds
        return _plan_of(spec, state)
    if state.fingerprint == current:
        return _plan_of(spec, state)
    return (f"note: the state in {store.dir} was planned from another version of this spec or its input; `run` "
            "refuses it until --restart, which would do this:\n" + _dry_plan(spec))


def _dry_plan(spec: Spec) -> str:
    max_requests, max_bytes = _size(spec)

    writer = ShardWriter(None, JobSize(max_requests, max_bytes))
    sample = None
    for item in rendered(spec):
        line = orjson.dumps({"key": item.key, "request": item.request})
        writer.add(line, b"", item.record.where)
        sample = sample or line
    shards = writer.close()
    total = sum(s.count for s in shards)
    size = sum(s.bytes for s in shards)
    lines = [f"spec {spec.name}: nothing run yet",
             f"records: {total:,} from {open_source(spec.source).describe()}",
             f"jobs to submit: {len(shards)} (" + ", ".join(f"{s.count:,}" for s in shards[:10])
             + (", ..." if len(shards) > 10 else "") + f" requests; at most {max_requests:,} requests and "
             f"{max_bytes:,} bytes each), {spec.jobs.max_concurrent} at a time on {spec.backend.type}",
             f"input tokens (estimate): ~{size // _CHARS_PER_TOKEN:,}"]
    if sample:
        lines.append("sample request: " + sample.decode())
    return "\n".join(lines)


def _plan_of(spec: Spec, state: State) -> str:
    steps = p.make_plan(state, time.time(), spec.jobs.max_concurrent, output_fingerprint(spec))
    if steps.finished:
        return f"spec {spec.name}: finished; `run` has nothing to do\n" + status_of(state)
    names = Counter(type(s).__name__ for s in steps.steps)
    todo = ", ".join(f"{n} x {k.lower()}" for k, n in names.items()) or "wait"
    return f"spec {spec.name}: next: {todo}\n" + status_of(state)


def status_report(spec: Spec) -> str:
    """The state as saved."""
    state = state_store(spec).load()
    if state is None:
        return f"spec {spec.name}: not run yet (no state in {state_store(spec).dir})"
    return f"spec {spec.name}:\n" + status_of(state)


def status_of(state: State) -> str:
    """Shards, jobs by status, counts, job errors, what is left."""
    jobs = state.jobs()
    by_status = Counter(j.status for _, j in jobs)
    done = sum(s.done for s in state.shards)
    lines = [f"  records: {state.records:,} in {len(state.shards)} shard(s), {done} done",
             "  jobs: " + ", ".join(f"{n} {k}" for k, n in sorted(by_status.items()))]
    for shard, job in jobs:
        if job.error:
            lines.append(f"  shard {shard.index} job {job.n} ({job.name}): {job.ended or job.status}: {job.error}")
    if state.merged:
        m = state.merged
        lines.append(f"  merged: {m['rows']:,} rows, {m['ok']:,} ok, {m['failed']:,} failed")
    if state.cancelled_at:
        lines.append("  cancelled by `batchflow cancel`")
    return "\n".join(lines)
