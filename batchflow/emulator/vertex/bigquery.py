"""Vertex batch prediction jobs over BigQuery: `bigquerySource` in, `bigqueryDestination` out.

Create bodies (docs/google-apis.md, "REST shapes"): `"inputConfig": {"instancesFormat": "bigquery", "bigquerySource":
{"inputUri": "bq://p.d.t"}}`, `"outputConfig": {"predictionsFormat": "bigquery", "bigqueryDestination": {"outputUri":
"bq://p.d[.t]"}}`. The input table has a `request` column (JSON, or STRING holding JSON); every other column is
copied to the output row beside the reserved `response` (JSON), `status` (STRING, empty on success, the error
text otherwise) and `processed_time` (TIMESTAMP), as the service does, so a client's key travels as a column.
An output URI naming only a dataset gets a `predictions_<time>` table in it. Rows are read page by page and
written with one load job (a resumable upload of a local file): memory stays flat on a table of any size.
A text-embedding model's job (``text-embedding-005``, ``text-multilingual-embedding-002``: Google's "Get batch text
embeddings" page, read 2026-12-07) reads a ``content`` column instead (and ``task_type``, ``title`` when there) and
adds ``predictions`` (a STRING holding the JSON list ``[{"embeddings": {"statistics": {"token_count",
"truncated"}, "values": [...]}}]``, as the page's BigQuery output example shows it) and ``status`` to the input's
columns, each vector of the job's ``modelParameters.outputDimensionality`` when given (the parameters are the job's,
whatever its input); a Gemini embedding model's job is refused at create (it reads no BigQuery table).
A fault plan's request faults apply to each row as to a JSONL line, drawn by the row's passthrough columns (where
a client's key travels): an error in `status` (no `response`), a blocked or cut answer, a row dropped or doubled.

BigQuery is reached through google-cloud-bigquery, at BIGQUERY_EMULATOR_HOST when set (`batchflow.libs.bigquery`).
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import time
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from batchflow.emulator.faults.plan import LineFaults
from batchflow.emulator.model.degraded import degrade
from batchflow.emulator.vertex.execute import JobResult, answer_line, is_embedding_model, status_text
from batchflow.emulator.wire.errors import invalid_argument
from batchflow.emulator.wire.request_checks import field as proto_field

_TABLE = re.compile(r"^bq://([^.\s/]+)\.([^.\s/]+)\.([^.\s/]+)$")
_DATASET = re.compile(r"^bq://([^.\s/]+)\.([^.\s/]+)$")
RESERVED = ("response", "status", "processed_time")
EMBED_RESERVED = ("predictions", "status")  # what a text-embedding job adds to the input's columns
EMBED_INSTANCE = ("content", "task_type", "title")  # the columns a text-embedding job reads
_PAGE = 5_000


def input_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A `bigquerySource` input config, checked; 400 when malformed."""
    fmt = proto_field(config, "instancesFormat")
    if fmt != "bigquery":
        raise invalid_argument(f"input_config.instances_format: must be 'bigquery' with a bigquery_source, got {fmt!r}")
    uri = proto_field(proto_field(config, "bigquerySource"), "inputUri")
    if not isinstance(uri, str) or not _TABLE.match(uri):
        raise invalid_argument(f"input_config.bigquery_source.input_uri: not a bq://project.dataset.table URI: {uri!r}")
    return {"instancesFormat": fmt, "bigquerySource": {"inputUri": uri}}


def output_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A `bigqueryDestination` output config, checked; 400 when malformed."""
    fmt = proto_field(config, "predictionsFormat")
    if fmt != "bigquery":
        raise invalid_argument(f"output_config.predictions_format: must be 'bigquery' with a bigquery_destination, "
                               f"got {fmt!r}")
    uri = proto_field(proto_field(config, "bigqueryDestination"), "outputUri")
    if not isinstance(uri, str) or not (_TABLE.match(uri) or _DATASET.match(uri)):
        raise invalid_argument("output_config.bigquery_destination.output_uri: not a bq://project.dataset[.table] "
                               f"URI: {uri!r}")
    return {"predictionsFormat": fmt, "bigqueryDestination": {"outputUri": uri}}


def output_table(config: Mapping[str, Any], now: float) -> str | None:
    """`project.dataset.table` a BigQuery job writes (None for a GCS job)."""
    uri = (config.get("bigqueryDestination") or {}).get("outputUri")
    if not isinstance(uri, str):
        return None
    if _TABLE.match(uri):
        return uri.removeprefix("bq://")
    return f"{uri.removeprefix('bq://')}.predictions_{time.strftime('%Y_%m_%dT%H_%M_%S', time.gmtime(now))}"


def is_bigquery(input_config: Mapping[str, Any]) -> bool:
    """Whether a job reads BigQuery."""
    return "bigquerySource" in input_config


def output_info(output_dir: str) -> dict[str, str]:
    """The job's `outputInfo` for its output table."""
    project, dataset, table = output_dir.split(".")
    return {"bigqueryOutputDataset": f"bq://{project}.{dataset}", "bigqueryOutputTable": table}


def run_job(input_config: Mapping[str, Any], model_name: str, table: str, clock: Callable[[], float],
            keep: Callable[[], bool], faults: LineFaults | None = None,
            parameters: Mapping[str, Any] | None = None) -> JobResult:
    """Read the input table, answer every row, load the output table; the job's error when it cannot.
    ``parameters``: the job's ``modelParameters`` (a text embedding's ``outputDimensionality``, for every row)."""
    from batchflow.errors import BatchflowError
    from batchflow.libs import bigquery as bq

    source = str(input_config["bigquerySource"]["inputUri"]).removeprefix("bq://")
    fd, path = tempfile.mkstemp(prefix="emulator-bq-", suffix=".jsonl")
    try:
        client = bq.client(source.split(".")[0])
        with bq.api_errors(f"read {source}"):
            schema = client.get_table(source).schema
        embed = is_embedding_model(model_name)
        needed = "content" if embed else "request"
        if needed not in [f.name for f in schema]:
            return JobResult(error={"code": 3, "message": f"The input table {source} has no {needed!r} column."})
        with os.fdopen(fd, "wb") as out:
            rows = client.list_rows(source, page_size=_PAGE)
            count, ok = (_embed_rows(rows, model_name, out, clock, faults, parameters) if embed else
                         _answer_rows(rows, model_name, out, clock, faults))
        if count == 0:
            return JobResult(error={"code": 3, "message": f"No instances found in the input bq://{source}."})
        if keep():
            reserved = EMBED_RESERVED if embed else RESERVED
            _load(client, path, table, [f for f in schema if f.name not in reserved], embed)
        return JobResult(count, ok, count - ok)
    except BatchflowError as exc:
        return JobResult(error={"code": 5, "message": str(exc)[:500]})
    finally:
        os.unlink(path)


def _answer_rows(rows: Any, model_name: str, out: Any, clock: Callable[[], float],
                 faults: LineFaults | None = None) -> tuple[int, int]:
    from batchflow.libs.bigquery import json_value

    model_id = model_name.rsplit("/", 1)[-1]
    count = ok = 0
    for n, row in enumerate(rows):
        values = {k: json_value(v) for k, v in row.items()}
        request = values.get("request")
        if isinstance(request, str):
            with contextlib.suppress(orjson.JSONDecodeError):  # if not, answered as the invalid request it is
                request = orjson.loads(request)
        line, good = answer_line(orjson.dumps({"request": request}), model_id, False, clock)
        fault = faults(_identity(values, n)) if faults is not None else None
        if fault is not None and fault.error is not None:
            line, good = {"status": status_text(fault.error), "processed_time": line.get("processed_time")}, False
        elif line.get("response") is not None:
            line["response"] = degrade(line["response"], fault)
        values.update(response=line.get("response"), status=line.get("status", ""),
                      processed_time=line.get("processed_time"))
        copies = 1 if fault is None else fault.copies
        out.write(orjson.dumps(values, option=orjson.OPT_APPEND_NEWLINE) * copies)
        count, ok = count + copies, ok + good * copies
    return count, ok


def _embed_rows(rows: Any, model_name: str, out: Any, clock: Callable[[], float],
                faults: LineFaults | None = None, parameters: Mapping[str, Any] | None = None) -> tuple[int, int]:
    """A text-embedding job's rows: each row's ``content`` (``task_type``, ``title``) answered as a JSONL
    instance is, its columns copied beside ``predictions`` and ``status``; an error fault leaves no prediction."""
    from batchflow.libs.bigquery import json_value

    model_id = model_name.rsplit("/", 1)[-1]
    count = ok = 0
    for n, row in enumerate(rows):
        values = {k: json_value(v) for k, v in row.items()}
        instance = {k: values[k] for k in EMBED_INSTANCE if values.get(k) is not None}
        line, good = answer_line(orjson.dumps(instance), model_id, True, clock, parameters)
        fault = faults(_identity(values, n)) if faults is not None else None
        if fault is not None and fault.error is not None:
            line, good = {"status": status_text(fault.error)}, False
        predictions = line.get("predictions")
        values.update(predictions=orjson.dumps(predictions).decode() if predictions is not None else None,
                      status=line.get("status", ""))
        copies = 1 if fault is None else fault.copies
        out.write(orjson.dumps(values, option=orjson.OPT_APPEND_NEWLINE) * copies)
        count, ok = count + copies, ok + good * copies
    return count, ok


def _identity(values: Mapping[str, Any], n: int) -> str:
    """What a row's fault is drawn by: its passthrough columns (a client's key), else its position."""
    passthrough = {k: v for k, v in values.items() if k != "request"}
    return ",".join(f"{k}={v}" for k, v in sorted(passthrough.items())) if passthrough else f"#{n}"


def _load(client: Any, path: str, table: str, passthrough: list[Any], embed: bool = False) -> None:
    from google.cloud import bigquery

    from batchflow.libs import bigquery as bq

    added = ([bigquery.SchemaField("predictions", "STRING"), bigquery.SchemaField("status", "STRING")] if embed else
             [bigquery.SchemaField("response", "JSON"), bigquery.SchemaField("status", "STRING"),
              bigquery.SchemaField("processed_time", "TIMESTAMP")])
    schema = [*passthrough, *added]
    config = bigquery.LoadJobConfig(schema=schema, source_format="NEWLINE_DELIMITED_JSON",
                                    write_disposition="WRITE_TRUNCATE")
    with bq.api_errors(f"write {table}"), open(path, "rb") as fh:
        client.load_table_from_file(fh, table, job_config=config).result()
