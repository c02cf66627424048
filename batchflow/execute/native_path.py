"""The BigQuery-native execution path (``source.native: true``): every record stays inside BigQuery.

Plan, then execute, as the file path does, with the same state file, the same job states and the same plan
(``plan.make_plan``); only what a step does differs:

- prepare: ``CREATE OR REPLACE TABLE …requests AS SELECT <key>, <request built by SQL>, <its digest>`` from the
  source; one aggregate row that checks the keys and counts the requests new, changed, kept and removed against
  the kept answers; then one ``INSERT … SELECT`` with an anti-join puts the requests with no kept answer for their
  (key, digest) into the generation's send table, numbered into partitions of at most ``jobs.max_requests``
  distinct requests, one table and one Vertex job each (Vertex takes 200,000 requests per job at most);
- submit: "submitting" is saved with the deterministic display name *before* ``create``; a run that finds a
  job there looks it up by that name (adopt) instead of creating another. The job reads ``bq://…p<N>`` and
  writes ``bq://…p<N>_j<M>_out``, one row a distinct request, its identity passing through as the
  ``batchflow_request`` column (identical requests of several keys asked once, as the runner path does on Vertex);
- collect: one aggregate row (good and failed lines, the tokens billed) from the job's output table;
- settle: the requests with no good answer and attempts left go into a new table, and a new job;
- keep: one ``MERGE`` puts each sent request's best answer into the kept answers under its key and digest, and
  the keys gone from the source are deleted from them;
- merge: ``output_sql`` joins each source row to the kept answer of its request into a staging table, which the
  ``bigquery`` destination moves into the output in one statement (truncate or merge by key); then the
  generation's work tables are dropped (each made with an expiration, in case a run never gets there).

A changed table is planned anew from the kept answers, as the file path plans from its own (``recurring``): only
new and changed rows are sent again, and the failures that may pass; ``--restart`` empties the kept answers.
The runner reads no record: only table metadata and aggregate rows (one a query, or one a job) come back from
BigQuery. A job's input tokens are estimated in SQL from the bytes of the line the runner path would write for each
request (``native_sql.parts_sql``), and the budget is checked before any partition is made.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from pathlib import Path
from typing import Any

from batchflow import logs
from batchflow.answers.earlier import Earlier
from batchflow.backends.base import JobInfo
from batchflow.backends.vertex import job_parameters
from batchflow.backends.vertex_bq import VertexTableJobs
from batchflow.destinations.bigquery import BigQueryDestination
from batchflow.errors import CallTimedOut, DataError
from batchflow.execute import native_sql as ns
from batchflow.execute.path import NextJob
from batchflow.libs import bigquery as bq
from batchflow.prepare.prepare import display_name, fingerprint
from batchflow.sources.bigquery import BigQuerySource
from batchflow.spec import models
from batchflow.spec.limits import spec_job_size
from batchflow.spec.spec import Spec
from batchflow.state import cost
from batchflow.state import state as st
from batchflow.state.state import Job, Shard, State

log = logs.get_logger(__name__)


class NativePath:
    """Work tables ``_bf_<name>_*`` beside the output; Vertex jobs over them; the join done by BigQuery."""

    recurring = True  # the kept answers are in BigQuery: a changed table or spec sends only what changed

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.output = BigQueryDestination(spec.output)
        self.out = self.output.table
        self.requests, self.kept = self.table("requests"), self.table("kept")
        self._sql: ns.NativeSql | None = None
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

    @property
    def sql(self) -> ns.NativeSql:
        """The spec as SQL over the source's columns (read once: table metadata, or a query's schema)."""
        if self._sql is None:
            self._sql = ns.compile_spec(self.spec, ns.columns_of(self._source_schema()))
        return self._sql

    def _source_schema(self) -> list[Any]:
        src = self.spec.source
        with bq.api_errors(f"source {src.table or 'query'}"):
            if src.table:
                return list(self.client.get_table(str(bq.TableId.parse(src.table)), **bq.call()).schema)
            job = self.client.query(f"SELECT * FROM {ns.source_sql(self.spec)} LIMIT 0", **bq.call())
            return list(job.result(**bq.job_wait()).schema)

    def _one(self, sql: str) -> dict[str, Any]:
        """The single row of an aggregate query (never a record)."""
        with bq.api_errors("BigQuery"):
            return dict(next(iter(self.client.query(sql, **bq.call()).result(**bq.job_wait()))))

    def _rows(self, sql: str) -> list[dict[str, Any]]:
        """The rows of a grouped aggregate (one a partition: a few, never a record)."""
        with bq.api_errors("BigQuery"):
            return [dict(row) for row in self.client.query(sql, **bq.call()).result(**bq.job_wait())]

    def _run_sql(self, sql: str) -> None:
        with bq.api_errors("BigQuery"):
            self.client.query(sql, **bq.call()).result(**bq.job_wait())

    staging_timed_out: CallTimedOut | None = None  # its inputs are tables: nothing is uploaded while preparing

    def fingerprint(self) -> str:
        return fingerprint(self.spec)

    def source_stat(self) -> str:
        """A table's version; a query's results may change at any time, so a query is planned on every run."""
        if self.spec.source.table:
            return BigQuerySource(self.spec.source).fingerprint()
        return f"query at {time.time()}"

    def check_output(self) -> None:
        self.output.check()

    def diff(self, retry_errors: bool, fresh: bool = False) -> dict[str, Any]:
        """The source's requests against the kept answers (``requests`` rebuilt from the source now)."""
        sql = self.sql  # a template BigQuery cannot write is refused before any table is made
        self._run_sql(ns.kept_table_sql(self.kept, fresh))
        self._run_sql(ns.requests_sql(sql, self.requests))
        return self._counted(self._one(ns.diff_sql(self.requests.sql, self.kept.sql, retry_errors)))

    def preview(self, retry_errors: bool, with_kept: bool, gen: int) -> tuple[dict[str, Any], int | None, State]:
        """What a run would find now (``plan``), with no table made or changed: the counts of ``diff``, the bytes
        the query would process (a dry run; None when BigQuery gives no figure), and generation ``gen`` as
        ``prepare`` would make it (its jobs, their requests and estimated input tokens), not saved."""
        from google.cloud import bigquery
        from google.cloud.exceptions import NotFound

        kept = ns.NO_KEPT
        if with_kept:
            with bq.api_errors("BigQuery"), contextlib.suppress(NotFound):  # none kept yet: every request is new
                self.client.get_table(str(self.kept), **bq.call())
                kept = self.kept.sql
        sql = ns.diff_sql(ns.source_requests(self.sql), kept, retry_errors)
        counts = self._counted(self._one(sql))
        config = bigquery.QueryJobConfig(dry_run=True, use_query_cache=False)
        with bq.api_errors("BigQuery"):
            dry = self.client.query(sql, job_config=config, **bq.call())
        processed = dry.total_bytes_processed
        per_job = spec_job_size(self.spec).max_requests
        columns = f"{ns.KEY}, {ns.BYTES}, {ns.REQUEST}"
        rows = f"({ns.to_send(ns.source_requests(self.sql), kept, per_job, retry_errors, columns)})"
        state = self._generation(gen, counts, self._rows(ns.parts_sql(rows)), "")
        return counts, int(processed) if processed else None, state

    def _counted(self, found: dict[str, Any]) -> dict[str, int]:
        """The diff's row as counts, once the keys are found unique and not null."""
        n = int(found["n"])
        if n == 0:
            raise DataError(f"{self.spec.where('source')}: source: no records to run")
        if found["null_keys"] or found["keys"] != n:
            dup = self._one(f"SELECT ANY_VALUE({ns.KEY}) AS k FROM (SELECT {ns.KEY} FROM "
                            f"{ns.source_requests(self.sql)} GROUP BY 1 HAVING COUNT(*) > 1 OR {ns.KEY} IS NULL)")["k"]
            raise DataError(f"{self.spec.where('key')}: key: keys must be unique and not null; {dup!r} is not")
        return {k: int(found[k] or 0) for k in ("n", "new", "changed", "kept", "failed", "removed", "content")}

    def prepare(self, root: Path, gen: int, earlier: Earlier | None, retry_errors: bool,
                stage: bool = False) -> State:
        """The partition tables are the jobs' inputs as they stand: staged whatever ``stage`` says. With no
        earlier generation (a first run, ``--restart``) the kept answers start empty."""
        per_job = spec_job_size(self.spec).max_requests
        counts = self.diff(retry_errors, fresh=earlier is None)
        send = self.table(f"g{gen}_send")
        create, insert = ns.send_sql(self.requests, self.kept, send, per_job, retry_errors)
        self._run_sql(create)
        self._run_sql(insert)
        parts = self._rows(ns.parts_sql(send.sql))
        state = self._generation(gen, counts, parts, str(send) if parts else "")
        try:  # the whole plan within budget:, or no partition made (the send table goes too)
            cost.check_plan(self.spec, state)
        except cost.OverBudget:
            self._drop([str(send)])
            raise
        if not parts:  # every request answered already: nothing to send, no table to keep
            self._drop([str(send)])
        for shard in state.shards:
            self._run_sql(ns.partition_sql(self.sql, send, bq.TableId.parse(shard.requests), shard.index))
        log.info("prepared in BigQuery", records=counts["n"], sending=sum(s.count for s in state.shards),
                 distinct=sum(s.jobs[0].count for s in state.shards),
                 jobs=len(parts), table=str(self.requests), **{k: v for k, v in state.diff.items() if v})
        return state

    def _generation(self, gen: int, counts: dict[str, int], parts: list[dict[str, Any]], send: str) -> State:
        """Generation ``gen``: one unit and job a partition (``parts_sql``'s rows), its input the partition's
        table of distinct requests, its input tokens estimated from its lines' bytes as the runner path's plan
        estimates them."""
        fp = self.fingerprint()
        shards = []
        for i, found in enumerate(parts):
            part, count, tokens = self.table(f"g{gen}_p{i:05d}"), int(found["n"]), int(found["tokens"] or 0)
            digest = hashlib.blake2b(f"{fp}:{counts['content']}:{i}".encode(), digest_size=8).hexdigest()
            job = Job(n=1, input=str(part), count=count, digest=digest, status=st.STAGED, file=part.uri,
                      tokens=tokens, display_name=display_name(self.spec.name, gen, i, 1, digest))
            keys = int(found["keys"])  # the shard answers its keys; its job asks each distinct request once
            shards.append(Shard(i, keys, int(found["bytes"] or 0), digest, str(part), "", jobs=[job]))
        diff = {"new": counts["new"], "changed": counts["changed"], "unchanged": counts["kept"],
                "retried": counts["failed"], "removed": counts["removed"]}
        return State(self.spec.name, fp, records=counts["n"], shards=shards, gen=gen, diff=diff,
                     source={"stat": self.source_stat(), "content": str(counts["content"]), "send": send})

    def keep(self, state: State) -> dict[str, Any]:
        """The generation's answers into the kept answers (one ``MERGE``), the removed keys out of them."""
        send = state.source.get("send")
        if send:
            preds = [(bq.TableId.parse(j.results), j.n) for _, j in state.jobs() if j.results]
            self._run_sql(ns.keep_sql(bq.TableId.parse(send), preds, self.kept, self.spec.model, self.sql.embed))
        self._run_sql(ns.forget_removed_sql(self.requests, self.kept))
        counts = self._one(ns.kept_counts_sql(self.requests, self.kept))
        return {"dir": None, "table": str(self.kept), "ok": int(counts["ok"]),
                "kept_errors": int(counts["kept_errors"]), "retry": int(counts["retry"])}

    def stage(self, job: Job) -> str:
        return str(job.file)  # the partition table is the job's input as it stands

    def create(self, shard: Shard, job: Job) -> JobInfo:
        dest = self._job_table(shard, job.n, "_out")
        return self.jobs.create_job(self.spec.model, str(job.file), dest.uri, job.display_name,
                                    job_parameters(self.spec))

    def _job_table(self, shard: Shard, n: int, suffix: str = "") -> bq.TableId:
        """Job ``n`` of the shard's own tables: ``…g<G>_p<N>_j<n>`` (its input, for a retry) and ``…_out``."""
        part = bq.TableId.parse(shard.requests)
        return part.sibling(f"{part.table}_j{n}{suffix}")

    def collect(self, shard: Shard, job: Job) -> None:
        if job.ended == st.SUCCEEDED and job.output:
            table = bq.TableId.parse(job.output)
            counts = self._one(ns.counts_sql(table, self.sql.embed))
            job.ok, job.failed, job.results = int(counts["ok"]), int(counts["n"]) - int(counts["ok"]), str(table)
            job.usage = {name: int(counts[name]) for name, _ in ns.USAGE}
            self._expire(table)

    def _expire(self, table: bq.TableId) -> None:
        """A job's output table (Vertex made it) given the work tables' expiration, in case it is never dropped."""
        import datetime as dt

        from google.cloud import bigquery

        found = bigquery.Table(str(table))
        found.expires = dt.datetime.now(dt.UTC) + dt.timedelta(days=ns.WORK_TABLE_DAYS)
        with bq.api_errors(f"expire {table}"):
            self.client.update_table(found, ["expires"], **bq.call())

    def collect_lost(self, shard: Shard, job: Job, message: str) -> None:
        """The job's output table is missing: the job counts as failed, so the partition is submitted again."""
        job.ok, job.failed, job.ended, job.error = 0, job.count, st.FAILED, message
        job.usage = cost.Usage().as_dict()  # nothing answered, nothing billed (as the runner path counts it)

    def next_job(self, shard: Shard, n: int) -> NextJob | None:
        retry = self.spec.retry
        failures = sum(j.ended in (st.FAILED, st.EXPIRED, st.CANCELLED) for j in shard.jobs)
        if shard.jobs[-1].ended != st.SUCCEEDED and failures >= retry.job_attempts:
            return None
        dest = self._job_table(shard, n)
        preds = [(bq.TableId.parse(j.results), j.n) for j in shard.jobs if j.results]
        self._run_sql(ns.retry_sql(self.sql, bq.TableId.parse(shard.requests), preds, dest, retry.request_attempts))
        count = int(self._one(f"SELECT COUNT(*) AS n FROM {dest.sql}")["n"])
        if not count:
            self._drop([str(dest)])  # every request answered or out of attempts: no job, no table
            return None
        return NextJob(str(dest), count, shard.digest, dest.uri)

    def merge(self, state: State) -> tuple[int, int]:
        o = self.spec.output
        select = ns.output_sql(self.sql, self.requests, self.kept, o.parse == "json", o.include_response,
                               o.include_record, o.model or models.bare(self.spec.model))
        self._run_sql(f"CREATE OR REPLACE TABLE {self.output.staging.sql} AS\n{select}")
        counts = self._one(f"SELECT COUNT(*) AS n, COUNTIF(status = 'ok') AS ok FROM {self.output.staging.sql}")
        self.output.publish()
        self._drop_work(state)
        return int(counts["n"]), int(counts["ok"])

    def _drop_work(self, state: State) -> None:
        """The generation's send, partition, retry and job output tables, once its answers are kept and merged
        (the requests and the kept answers stay: the next run plans from them)."""
        tables = {state.source.get("send") or ""} | {s.requests for s in state.shards}
        tables |= {t for _, j in state.jobs() for t in (j.input, j.results or j.output or "") if t}
        self._drop(sorted(t for t in tables if t))

    def _drop(self, tables: list[str]) -> None:
        with bq.api_errors("BigQuery"):
            for table in tables:
                self.client.delete_table(str(bq.TableId.parse(table)), not_found_ok=True, **bq.call())

    def output_name(self) -> str:
        return str(self.out)

    def output_exists(self) -> bool:
        return True  # not worth a query on every cycle

    def finished(self) -> None:
        """Nothing staged beside the jobs (the native path reads the table itself)."""

    def close(self) -> None:
        if self._jobs is not None:
            self._jobs.close()
