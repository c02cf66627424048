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
from pathlib import Path
from typing import Any

from batchflow import logs
from batchflow.answers.earlier import Earlier
from batchflow.backends.base import JobInfo
from batchflow.backends.vertex_bq import VertexTableJobs
from batchflow.destinations.bigquery import BigQueryDestination
from batchflow.errors import CallTimedOut, DataError
from batchflow.execute import native_sql as ns
from batchflow.execute.path import NextJob
from batchflow.libs import bigquery as bq
from batchflow.prepare.prepare import display_name, fingerprint
from batchflow.sources.bigquery import BigQuerySource
from batchflow.spec.limits import spec_job_size
from batchflow.spec.spec import Spec
from batchflow.state import state as st
from batchflow.state.state import Job, Shard, State

log = logs.get_logger(__name__)


class NativePath:
    """Work tables ``_bf_<name>_*`` beside the output; Vertex jobs over them; the join done by BigQuery."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.sql = ns.compile_spec(spec)
        self.output = BigQueryDestination(spec.output)
        self.out = self.output.table
        self._jobs: VertexTableJobs | None = None
        self._client: Any = None

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
            self._jobs = VertexTableJobs.from_spec(self.spec)
        return self._jobs

    def _one(self, sql: str) -> dict[str, Any]:
        """The single row of an aggregate query (never a record)."""
        with bq.api_errors("BigQuery"):
            return dict(next(iter(self.client.query(sql, **bq.call()).result(**bq.job_wait()))))

    def _run_sql(self, sql: str) -> None:
        with bq.api_errors("BigQuery"):
            self.client.query(sql, **bq.call()).result(**bq.job_wait())

    recurring = False  # the records stay in BigQuery: a changed input or spec needs --restart
    staging_timed_out: CallTimedOut | None = None  # its inputs are tables: nothing is uploaded while preparing

    def fingerprint(self) -> str:
        return fingerprint(self.spec, BigQuerySource(self.spec.source).fingerprint())

    def source_stat(self) -> str:
        return BigQuerySource(self.spec.source).fingerprint()

    def keep(self, state: State) -> dict[str, Any]:
        return {"dir": None, "ok": 0, "kept_errors": 0, "retry": 0}  # answers stay in BigQuery

    def check_output(self) -> None:
        self.output.check()

    def prepare(self, root: Path, gen: int, earlier: Earlier | None, retry_errors: bool,
                stage: bool = False) -> State:
        """The partition tables are the jobs' inputs as they stand: staged whatever ``stage`` says."""
        fp = self.fingerprint()
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
                      display_name=display_name(self.spec.name, gen, i, 1, digest))
            shards.append(Shard(i, count, 0, digest, str(part), "", jobs=[job]))
        state = State(self.spec.name, fp, records=n, shards=shards, gen=gen)
        log.info("prepared in BigQuery", records=n, jobs=parts, table=str(requests))
        return state

    def stage(self, job: Job) -> str:
        return str(job.file)  # the partition table is the job's input as it stands

    def create(self, shard: Shard, job: Job) -> JobInfo:
        dest = self.table(f"p{shard.index:05d}_j{job.n}_out")
        return self.jobs.create_job(self.spec.model, str(job.file), dest.uri, job.display_name)

    def collect(self, shard: Shard, job: Job) -> None:
        if job.ended == st.SUCCEEDED and job.output:
            table = bq.TableId.parse(job.output)
            counts = self._one(ns.counts_sql(table))
            job.ok, job.failed, job.results = int(counts["ok"]), int(counts["n"]) - int(counts["ok"]), str(table)

    def collect_lost(self, shard: Shard, job: Job, message: str) -> None:
        """The job's output table is missing: the job counts as failed, so the partition is submitted again."""
        job.ok, job.failed, job.ended, job.error = 0, job.count, st.FAILED, message

    def next_job(self, shard: Shard, n: int) -> NextJob | None:
        retry = self.spec.retry
        failures = sum(j.ended in (st.FAILED, st.EXPIRED, st.CANCELLED) for j in shard.jobs)
        if shard.jobs[-1].ended != st.SUCCEEDED and failures >= retry.job_attempts:
            return None
        dest = self.table(f"p{shard.index:05d}_j{n}")
        preds = [(bq.TableId.parse(j.results), j.n) for j in shard.jobs if j.results]
        self._run_sql(ns.retry_sql(bq.TableId.parse(shard.requests), preds, dest, retry.request_attempts))
        count = int(self._one(f"SELECT COUNT(*) AS n FROM {dest.sql}")["n"])
        return NextJob(str(dest), count, shard.digest, dest.uri) if count else None

    def merge(self, state: State) -> tuple[int, int]:
        preds = [(bq.TableId.parse(j.results), j.n) for _, j in state.jobs() if j.results]
        o = self.spec.output
        select = ns.output_sql(self.sql, self.table("requests"), preds, o.parse == "json", o.include_response,
                               o.include_record)
        self._run_sql(f"CREATE OR REPLACE TABLE {self.output.staging.sql} AS\n{select}")
        counts = self._one(f"SELECT COUNT(*) AS n, COUNTIF(status = 'ok') AS ok FROM {self.output.staging.sql}")
        self.output.publish()
        return int(counts["n"]), int(counts["ok"])

    def output_name(self) -> str:
        return str(self.out)

    def output_exists(self) -> bool:
        return True  # not worth a query on every cycle

    def finished(self) -> None:
        """Nothing staged beside the jobs (the native path reads the table itself)."""

    def close(self) -> None:
        if self._jobs is not None:
            self._jobs.close()
