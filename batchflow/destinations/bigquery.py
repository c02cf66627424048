"""The ``bigquery`` destination: the output rows loaded into a table with a load job, never doubled.

The rows are streamed into a local newline-delimited JSON file (memory stays flat), loaded into a staging table
beside the output (``<table>__batchflow_staging``, replaced by every load), and then moved in **one statement**:

- ``write: truncate``: ``CREATE OR REPLACE TABLE out AS SELECT * FROM staging`` (the table becomes this run's
  rows, with this spec's columns);
- ``write: append``: ``MERGE out USING staging ON out.key = staging.key`` — a row whose key the table holds is
  replaced, any other is inserted; so a load repeated after a crash, or a rerun, never doubles a row.

Either way the table holds the old rows or all the new ones, never part of a load. The staging table is dropped
afterwards. Columns (one row as docs/spec.md shows it, nested the same way):

``key`` STRING, ``status`` STRING, ``text`` STRING (``task: embed``: ``embedding`` REPEATED FLOAT64, that is
ARRAY<FLOAT64>, then ``dimensions`` INT64 and ``model`` STRING),
``parsed`` (``parse: json``: a RECORD with one typed column per property when ``generation_config`` gives a
``response_schema`` of an object, else JSON), ``finish_reason`` STRING, ``usage`` RECORD, ``attempts`` INT64,
``error`` RECORD(code, message), ``response`` JSON (``include_response``), ``record`` JSON (``include_record``).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from typing import Any

import orjson

from batchflow.destinations.base import Rows
from batchflow.errors import SpecError
from batchflow.libs import bigquery as bq
from batchflow.spec.spec import OutputSpec

Column = tuple[str, str, str, tuple[Any, ...]]  # name, type, mode, sub-columns
_N = "NULLABLE"
_SCALARS = {"string": "STRING", "integer": "INT64", "number": "FLOAT64", "boolean": "BOOL"}


def output_columns(spec: OutputSpec, task: str, response_schema: Mapping[str, Any] | None) -> list[Column]:
    """The output table's columns, in order (module doc)."""
    cols: list[Column] = [("key", "STRING", "REQUIRED", ()), ("status", "STRING", "NULLABLE", ())]
    if task == "embed":
        cols.append(("embedding", "FLOAT64", "REPEATED", ()))  # ARRAY<FLOAT64>: BigQuery has no FLOAT32
        cols.append(("dimensions", "INT64", "NULLABLE", ()))
        cols.append(("model", "STRING", "NULLABLE", ()))
    else:
        cols.append(("text", "STRING", "NULLABLE", ()))
        if spec.parse == "json":
            fields = parsed_fields(response_schema)
            cols.append(("parsed", "RECORD", _N, tuple(fields)) if fields else ("parsed", "JSON", _N, ()))
        cols.append(("finish_reason", "STRING", "NULLABLE", ()))
        cols.append(("usage", "RECORD", "NULLABLE", tuple((n, "INT64", "NULLABLE", ()) for n in
                                                          ("prompt_tokens", "output_tokens", "total_tokens"))))
    cols.append(("attempts", "INT64", "NULLABLE", ()))
    cols.append(("error", "RECORD", _N, (("code", "INT64", _N, ()), ("message", "STRING", _N, ()))))
    if spec.include_response:
        cols.append(("response", "JSON", "NULLABLE", ()))
    if spec.include_record:
        cols.append(("record", "JSON", "NULLABLE", ()))
    return cols


def parsed_fields(schema: Mapping[str, Any] | None) -> list[Column]:
    """One column per property of an object response schema: scalars typed, anything else JSON."""
    if not isinstance(schema, Mapping) or str(schema.get("type", "")).lower() != "object":
        return []
    props = schema.get("properties")
    if not isinstance(props, Mapping) or not props:
        return []
    return [(str(name), _SCALARS.get(str((sub or {}).get("type", "")).lower(), "JSON"), "NULLABLE", ())
            for name, sub in props.items()]


def _fit(value: Any, kind: str) -> Any:
    """A parsed value made to fit its typed column: a value of another type becomes null, never a failed load."""
    if value is None or kind == "JSON":
        return value
    if kind == "STRING":
        return value if isinstance(value, str) else orjson.dumps(value).decode()
    if kind == "BOOL":
        return value if isinstance(value, bool) else None
    if kind == "INT64":
        return value if isinstance(value, int) and not isinstance(value, bool) else None
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def table_row(row: dict[str, Any], parsed: list[Column]) -> dict[str, Any]:
    """An output row as the table takes it: parsed fields fitted to their columns, the rest as it is."""
    if parsed and "parsed" in row:
        value = row["parsed"]
        fitted = {n: _fit(value.get(n), k) for n, k, _, _ in parsed} if isinstance(value, dict) else None
        row = {**row, "parsed": fitted}
    return row


class BigQueryDestination:
    """Loads the rows into ``output.table`` (module doc)."""

    def __init__(self, spec: OutputSpec) -> None:
        if not spec.table or spec.write not in ("truncate", "append"):
            raise SpecError("output: a bigquery output needs 'table' and 'write' (truncate or append)")
        self.spec = spec
        self.table = bq.TableId.parse(spec.table)
        self.staging = self.table.sibling(f"{self.table.table}__batchflow_staging")
        self.columns = output_columns(spec, spec.task, spec.response_schema)
        self._parsed = next((list(c[3]) for c in self.columns if c[0] == "parsed" and c[1] == "RECORD"), [])
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = bq.client(self.table.project, self.spec.location)
        return self._client

    def check(self) -> None:
        with bq.api_errors(f"output {self.table}: dataset {self.table.project}.{self.table.dataset}"):
            self.client.get_dataset(f"{self.table.project}.{self.table.dataset}", **bq.call())

    def write(self, rows: Rows) -> int:
        fd, path = tempfile.mkstemp(prefix="batchflow-bq-", suffix=".jsonl")
        try:
            count = 0
            with os.fdopen(fd, "wb") as out:
                for row in rows():
                    out.write(orjson.dumps(table_row(row, self._parsed), option=orjson.OPT_APPEND_NEWLINE))
                    count += 1
            self._load(path)
            self.publish()
            return count
        finally:
            os.unlink(path)

    def _load(self, path: str) -> None:
        from google.cloud import bigquery

        config = bigquery.LoadJobConfig(schema=schema_fields(self.columns), source_format="NEWLINE_DELIMITED_JSON",
                                        write_disposition="WRITE_TRUNCATE")
        with bq.api_errors(f"output {self.table}: load"), open(path, "rb") as fh:
            # No size given: a resumable upload, which streams the file in chunks whatever its size.
            self.client.load_table_from_file(fh, str(self.staging), job_config=config, timeout=bq.call()["timeout"]) \
                .result(**bq.job_wait())

    def publish(self) -> None:
        """Move the staging table's rows into the output in one statement (module doc), then drop it."""
        with bq.api_errors(f"output {self.table}: {self.spec.write}"):
            if self.spec.write == "truncate":
                self._query(f"CREATE OR REPLACE TABLE {self.table.sql} AS SELECT * FROM {self.staging.sql}")
            else:
                self._query(f"CREATE TABLE IF NOT EXISTS {self.table.sql} LIKE {self.staging.sql}")
                names = [f.name for f in self.client.get_table(str(self.staging), **bq.call()).schema]
                self._query(merge_sql(self.table.sql, self.staging.sql, names))
            self.client.delete_table(str(self.staging), not_found_ok=True, **bq.call())

    def _query(self, sql: str) -> None:
        self.client.query(sql, **bq.call()).result(**bq.job_wait())


def merge_sql(target: str, source: str, names: list[str]) -> str:
    """One MERGE that upserts ``source`` into ``target`` by ``key``."""
    cols = [bq.quote_name(n) for n in names]
    updates = ", ".join(f"{c} = S.{c}" for c in cols if c != "`key`")
    return (f"MERGE {target} T USING {source} S ON T.`key` = S.`key` "
            f"WHEN MATCHED THEN UPDATE SET {updates} "
            f"WHEN NOT MATCHED THEN INSERT ({', '.join(cols)}) VALUES ({', '.join('S.' + c for c in cols)})")


def schema_fields(columns: list[Column] | tuple[Any, ...]) -> list[Any]:
    """google-cloud-bigquery SchemaFields for the columns."""
    from google.cloud import bigquery

    return [bigquery.SchemaField(name, kind, mode=mode, fields=schema_fields(sub)) for name, kind, mode, sub in columns]
