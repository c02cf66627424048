"""The BigQuery-native execution path (``source.native: true``): every record stays inside BigQuery.

Plan, then execute, as the file path does, with the same state file, the same job states and the same plan
(``plan.make_plan``); only what a step does differs:

- prepare: ``CREATE OR REPLACE TABLE …requests AS SELECT <key>, <request built by SQL>, <partition>`` from the
  source, one aggregate row to check the keys (count, distinct, null), then one table per partition of at most
  ``jobs.max_requests`` rows — one Vertex job each (Vertex takes 200,000 requests per job at most);
- submit: "submitting" is saved with the deterministic display name *before* ``create``; a run that finds a
  job there looks it up by that name (adopt) instead of creating another. The job reads ``bq://…p<N>`` and
  writes ``bq://…p<N>_j<M>_out``, the key passing through as the ``batchflow_key`` column;
- collect: one aggregate row (good and failed lines) from the job's output table;
- settle: the requests with no good answer and attempts left go into a new table, and a new job;
- merge: ``output_sql`` joins each request's best answer to its source row into a staging table, which the
  ``bigquery`` destination moves into the output in one statement (truncate or merge by key).

The runner reads no record: only table metadata and single aggregate rows come back from BigQuery.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from typing import Any

import structlog

from batchflow import bigquery as bq
from batchflow import native_sql as ns
from batchflow import plan as p
from batchflow import state as st
from batchflow.backends import JobInfo
from batchflow.backends.vertex_bq import VertexTableJobs
from batchflow.destinations.bigquery import BigQueryDestination
from batchflow.errors import DataError, RunFailed, StateError, TransientError
from batchflow.limits import spec_job_size
from batchflow.merge import output_fingerprint
from batchflow.prepare import display_name, fingerprint
from batchflow.runner import NotFinished, Summary, state_store
from batchflow.sources.bigquery import BigQuerySource
from batchflow.spec import Spec
from batchflow.state import Job, Shard, State

log = structlog.get_logger(__name__)
JobsFactory = Callable[[Spec], VertexTableJobs]


class NativeRunner:
    """Drives a native spec to the end (or, with ``wait=False``, as far as it goes without waiting)."""

    def __init__(self, spec: Spec, jobs: JobsFactory = VertexTableJobs.from_spec,
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep) -> None:
        self.spec = spec
        self.store = state_store(spec)
        self.sql = ns.compile_spec(spec)
        self.output = BigQueryDestination(spec.output)
        self.out = self.output.table
        self._jobs_factory = jobs
        self._jobs: VertexTableJobs | None = None
        self._client: Any = None
        self.clock, self.sleep = clock, sleep

    def table(self, suffix: str) -> bq.TableId:
        """One of this spec's work tables, beside the output."""
        return self.out.sibling(f"_bf_{self.spec.name.replace('-', '_')}_{suffix}")

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = bq.client(self.out.project, self.spec.source.location)
        return self._client

    @property
    def jobs(self) -> VertexTableJobs:
        if self._jobs is None:
            self._jobs = self._jobs_factory(self.spec)
        return self._jobs

    def run(self, wait: bool = True, restart: bool = False) -> Summary:
        with self.store.lock():
            if restart and self.store.path.exists():
                self.store.path.rename(self.store.dir / f"state.{time.strftime('%Y%m%dT%H%M%S')}.json")
            state = self.load_or_prepare()
            try:
                return self._drive(state, wait)
            finally:
                if self._jobs is not None:
                    self._jobs.close()

    def _one(self, sql: str) -> dict[str, Any]:
        """The single row of an aggregate query (never a record)."""
        with bq.api_errors("BigQuery"):
            return dict(next(iter(self.client.query(sql).result())))

    def _run_sql(self, sql: str) -> None:
        with bq.api_errors("BigQuery"):
            self.client.query(sql).result()

    def load_or_prepare(self) -> State:
        """The saved state if planned from this spec and input; else the request tables, built now."""
        fp = fingerprint(self.spec, BigQuerySource(self.spec.source).fingerprint())
        state = self.store.load()
        if state is None:
            self.output.check()
            return self._prepare(fp)
        if state.fingerprint != fp:
            raise StateError(f"{self.store.dir}: the state was planned from another version of this spec or of its "
                             "input; run with --restart to start over")
        return state

    def _prepare(self, fp: str) -> State:
        per_job = spec_job_size(self.spec).max_requests
        requests = self.table("requests")
        self._run_sql(ns.requests_sql(self.sql, requests, per_job))
        found = self._one(ns.check_sql(requests))
        n, parts = int(found["n"]), int(found["parts"])
        if n == 0:
            raise DataError(f"{self.spec.where('source')}: source: no records to run")
        if found["null_keys"] or found["keys"] != n:
            dup = self._one(f"SELECT ANY_VALUE({ns.KEY}) AS k FROM (SELECT {ns.KEY} FROM {requests.sql} "
                            f"GROUP BY 1 HAVING COUNT(*) > 1 OR {ns.KEY} IS NULL)")["k"]
            raise DataError(f"{self.spec.where('key')}: key: keys must be unique and not null; {dup!r} is not")
        shards = []
        for i in range(parts):
            part = self.table(f"p{i:05d}")
            self._run_sql(ns.partition_sql(requests, part, i))
            count = min(per_job, n - i * per_job)
            digest = hashlib.blake2b(f"{fp}:{i}".encode(), digest_size=8).hexdigest()
            job = Job(n=1, input=str(part), count=count, digest=digest, status=st.STAGED, file=part.uri,
                      display_name=display_name(self.spec.name, i, 1, digest))
            shards.append(Shard(i, count, 0, digest, str(part), "", jobs=[job]))
        state = State(self.spec.name, fp, records=n, shards=shards)
        self.store.save(state)
        log.info("prepared in BigQuery", records=n, jobs=parts, table=str(requests))
        return state

    def _drive(self, state: State, wait: bool) -> Summary:
        if state.cancelled_at:
            raise RunFailed(f"{self.store.dir}: this run was cancelled; run with --restart to start over")
        out_fp = output_fingerprint(self.spec)
        while True:
            now = self.clock()
            plan = p.make_plan(state, now, self.spec.jobs.max_concurrent, out_fp)
            if plan.finished:
                return self._summary(state)
            progressed = any([self._execute(step, state) for step in plan.steps])
            if progressed:
                continue
            if not wait:
                raise NotFinished("jobs are running in Vertex AI; run again later")
            self.sleep(self.spec.jobs.poll_interval if plan.wait_until is None
                       else max(0.0, min(self.spec.jobs.poll_interval, plan.wait_until - now)))

    def _execute(self, step: p.Step, state: State) -> bool:
        try:
            match step:
                case p.Submit(shard, n):
                    return self._submit(state, shard, state.shards[shard].jobs[n - 1])
                case p.Adopt(shard, n):
                    return self._adopt(state, state.shards[shard].jobs[n - 1])
                case p.Poll(jobs):
                    return self._poll(state, [state.shards[s].jobs[n - 1] for s, n in jobs])
                case p.Collect(shard, n):
                    return self._collect(state, state.shards[shard].jobs[n - 1])
                case p.Settle(shard):
                    return self._settle(state, state.shards[shard])
                case p.Merge():
                    return self._merge(state)
        except TransientError as exc:
            log.warning("transient error; will retry", step=type(step).__name__, error=str(exc))
        return False

    def _submit(self, state: State, shard: int, job: Job) -> bool:
        job.status = st.SUBMITTING  # saved before create: a crash from here on adopts instead of creating
        self.store.save(state)
        dest = self.table(f"p{shard:05d}_j{job.n}_out")
        try:
            info = self.jobs.create_job(self.spec.model, str(job.file), dest.uri, job.display_name)
        except TransientError:
            raise  # stays "submitting": the next cycle looks it up before creating again
        except Exception:
            job.status = st.STAGED
            self.store.save(state)
            raise
        job.created_at = self.clock()
        self._record(job, info)
        log.info("job submitted", job=info.name, requests=job.count, input=job.input)
        self.store.save(state)
        return True

    def _adopt(self, state: State, job: Job) -> bool:
        info = self.jobs.find(job.display_name)
        if info is None:
            job.status = st.STAGED
        else:
            log.info("job adopted", job=info.name, display_name=job.display_name)
            self._record(job, info)
        self.store.save(state)
        return True

    def _poll(self, state: State, jobs: list[Job]) -> bool:
        infos = self.jobs.poll([str(j.name) for j in jobs])
        changed = [self._record(j, infos[str(j.name)]) for j in jobs if infos[str(j.name)].status != j.status]
        if changed:
            self.store.save(state)
        return bool(changed)

    def _record(self, job: Job, info: JobInfo) -> bool:
        job.name, job.status, job.output, job.error = info.name, info.status, info.output, info.error
        if info.status in st.FINISHED:
            job.ended, job.finished_at = info.status, self.clock()
            log.info("job finished", job=info.name, state=info.status, error=info.error)
        return True

    def _collect(self, state: State, job: Job) -> bool:
        if job.ended == st.SUCCEEDED and job.output:
            table = bq.TableId.parse(job.output)
            counts = self._one(ns.counts_sql(table))
            job.ok, job.failed, job.results = int(counts["ok"]), int(counts["n"]) - int(counts["ok"]), str(table)
        job.status = st.COLLECTED
        log.info("job collected", job=job.name, ok=job.ok, failed=job.failed)
        self.store.save(state)
        return True

    def _settle(self, state: State, shard: Shard) -> bool:
        retry = self.spec.retry
        failures = sum(j.ended in (st.FAILED, st.EXPIRED, st.CANCELLED) for j in shard.jobs)
        last = shard.jobs[-1]
        if last.ended != st.SUCCEEDED and failures >= retry.job_attempts:
            shard.done = True
        else:
            n = len(shard.jobs) + 1
            dest = self.table(f"p{shard.index:05d}_j{n}")
            preds = [(bq.TableId.parse(j.results), j.n) for j in shard.jobs if j.results]
            self._run_sql(ns.retry_sql(bq.TableId.parse(shard.requests), preds, dest, retry.request_attempts))
            count = int(self._one(f"SELECT COUNT(*) AS n FROM {dest.sql}")["n"])
            if count == 0:
                shard.done = True
            else:
                b = retry.backoff
                shard.jobs.append(Job(n=n, input=str(dest), count=count, digest=shard.digest, file=dest.uri,
                                      kind="retry" if last.ended == st.SUCCEEDED else "resubmit", status=st.STAGED,
                                      display_name=display_name(self.spec.name, shard.index, n, shard.digest),
                                      not_before=self.clock() + min(b.max, b.initial * b.multiplier ** (n - 2))))
                log.info("retrying requests", shard=shard.index, requests=count, attempt=n)
        self.store.save(state)
        return True

    def _merge(self, state: State) -> bool:
        preds = [(bq.TableId.parse(j.results), j.n) for _, j in state.jobs() if j.results]
        o = self.spec.output
        select = ns.output_sql(self.sql, self.table("requests"), preds, o.parse == "json", o.include_response,
                               o.include_record)
        self._run_sql(f"CREATE OR REPLACE TABLE {self.output.staging.sql} AS\n{select}")
        counts = self._one(f"SELECT COUNT(*) AS n, COUNTIF(status = 'ok') AS ok FROM {self.output.staging.sql}")
        self.output.publish()
        rows, ok = int(counts["n"]), int(counts["ok"])
        state.merged = {"output": output_fingerprint(self.spec), "rows": rows, "ok": ok, "failed": rows - ok,
                        "at": self.clock()}
        self.store.save(state)
        log.info("merged in BigQuery", output=str(self.out), rows=rows, ok=ok)
        return True

    def _summary(self, state: State) -> Summary:
        m = state.merged or {}
        summary = Summary(m.get("rows", 0), m.get("ok", 0), m.get("failed", 0), str(self.out))
        limit = self.spec.output.max_failed
        allowed = math.floor(limit * summary.records) if isinstance(limit, float) else limit
        if summary.failed > allowed:
            raise RunFailed(f"{summary.failed:,} of {summary.records:,} records failed (output.max_failed allows "
                            f"{allowed:,}); their rows in {summary.output} carry the errors")
        return summary


def cancel(spec: Spec, jobs: JobsFactory = VertexTableJobs.from_spec) -> int:
    """Cancel the native spec's running jobs and mark the run cancelled; how many jobs were cancelled."""
    store = state_store(spec)
    with store.lock():
        state = store.load()
        if state is None:
            return 0
        live = [j for _, j in state.jobs() if j.name and j.status in st.IN_FLIGHT]
        if live:
            client = jobs(spec)
            try:
                for job in live:
                    client.cancel(str(job.name))
            finally:
                client.close()
        state.cancelled_at = time.time()
        store.save(state)
        return len(live)
