"""Parquet as a ``files`` output: the rows written in row groups through pyarrow, streaming (memory stays flat).

The columns are the BigQuery output's (``destinations/bigquery.py``, ``output_columns``), fixed by the spec before
the first row, never by the rows: ``key, status, text`` (``embedding, dimensions, model`` for ``task: embed``,
the embedding a fixed-size list of float32 when the spec fixes its size), ``parsed``,
``finish_reason, usage{prompt_tokens, output_tokens, total_tokens}, attempts, error{code, message}``, ``response``,
``record``. Why that shape: rows vary (``parsed`` and ``record`` differ from row to row, an error row has no
``text``), and a Parquet file has one schema, set before its first row group. Columns whose shape is known are
typed, so pandas gets int64 counts and a user filters ``status`` or reads ``usage.total_tokens`` without parsing;
the shapes that vary (``record``, ``response``, and ``parsed`` unless the request's ``response_schema`` is an
object, which gives it one typed field per property, a value of another type made null) are JSON text, which
``json.loads`` / BigQuery's ``PARSE_JSON`` read back and which no row can break. The same file loads into
BigQuery with the columns a ``bigquery`` output would have made.

Rows are gathered column by column, up to ``ROW_GROUP_ROWS`` rows or ``ROW_GROUP_BYTES`` of text, then written as
one row group: a bounded buffer, whatever the number of rows. No row gives a valid file of no rows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import orjson

from batchflow.destinations.base import Rows
from batchflow.destinations.bigquery import Column, output_columns, parsed_fields, table_row
from batchflow.libs.arrow import arrow, release_unused
from batchflow.libs.jsonio import dumps_str
from batchflow.spec.spec import OutputSpec

# A buffered row costs ~1.8 KB (its values as Python objects, then as Arrow arrays): the merge of 1M rows peaked at
# 254 MB with row groups of 65,536 rows, 166 MB with 16,384 and 154 MB with 10,000 (on Arrow's own allocator, before
# batchflow.libs.arrow chose the system's). Row groups of 10,000 rows still read well (pandas, BigQuery); the byte bound
# holds the buffer when records are large.
ROW_GROUP_ROWS = 10_000
ROW_GROUP_BYTES = 4 << 20  # the text and JSON held before a row group is written (a large record fills it first)


class ByteSink(Protocol):
    """Where the file's bytes go (``destinations.files._Sink``)."""

    def write(self, data: bytes) -> None: ...


class _Position:
    """The file object pyarrow writes to: the sink, and the count of bytes written (pyarrow asks ``tell``)."""

    closed = False

    def __init__(self, sink: ByteSink) -> None:
        self._sink, self._written = sink, 0

    def write(self, data: bytes) -> int:
        self._sink.write(data)
        self._written += len(data)
        return len(data)

    def tell(self) -> int:
        return self._written

    def flush(self) -> None:
        """The sink flushes itself, once per MiB and at the end."""


def write_parquet(rows: Rows, sink: ByteSink, spec: OutputSpec) -> int:
    """The rows as one Parquet file, row group by row group; returns how many."""
    pa, pq = arrow()
    columns = output_columns(spec, spec.task, spec.response_schema)
    schema = pa.schema([_vector_field(pa, spec.dimensions) if column[0] == "embedding" and spec.task == "embed"
                        else _field(pa, column) for column in columns])
    cells = [(name, _cell_maker(name, kind)) for name, kind, _mode, _sub in columns]
    typed = parsed_fields(spec.response_schema) if spec.parse == "json" else []
    buffers: list[list[Any]] = [[] for _ in cells]
    count = held = 0
    with pq.ParquetWriter(_Position(sink), schema) as writer:
        for row in rows():
            row = table_row(row, typed)
            for buffer, (name, cell) in zip(buffers, cells, strict=True):
                value = cell(row.get(name))
                buffer.append(value)
                if type(value) is str:
                    held += len(value)
            count += 1
            if len(buffers[0]) >= ROW_GROUP_ROWS or held >= ROW_GROUP_BYTES:
                _write_group(pa, writer, schema, buffers)
                held = 0
        if buffers[0]:
            _write_group(pa, writer, schema, buffers)
    release_unused()
    return count


def _write_group(pa: Any, writer: Any, schema: Any, buffers: list[list[Any]]) -> None:
    arrays = [pa.array(buffer, type=field.type) for buffer, field in zip(buffers, schema, strict=True)]
    writer.write_batch(pa.record_batch(arrays, schema=schema))
    for buffer in buffers:
        buffer.clear()


_ARROW = {"STRING": "string", "JSON": "string", "INT64": "int64", "FLOAT64": "float64", "BOOL": "bool_"}


def _field(pa: Any, column: Column) -> Any:
    """A BigQuery column (name, type, mode, sub-columns) as an Arrow field; JSON is JSON text."""
    name, kind, mode, sub = column
    arrow = pa.struct([_field(pa, inner) for inner in sub]) if kind == "RECORD" else getattr(pa, _ARROW[kind])()
    if mode == "REPEATED":
        arrow = pa.list_(arrow)
    return pa.field(name, arrow, nullable=mode != "REQUIRED")


def _vector_field(pa: Any, dimensions: int | None) -> Any:
    """An embedding as vector readers load it: a fixed-size list of float32 when the spec fixes the size (every
    row's is then that size), else a list of float32."""
    kind = pa.list_(pa.float32(), dimensions) if dimensions else pa.list_(pa.float32())
    return pa.field("embedding", kind, nullable=True)


def _cell_maker(name: str, kind: str) -> Callable[[Any], Any]:
    """How a row's value becomes the column's: JSON text for a JSON column, a fitted error, else as it is."""
    if kind == "JSON":
        return _json_text
    if name == "error":
        return _error
    return _same


def _same(value: Any) -> Any:
    return value


def _json_text(value: Any) -> str | None:
    if value is None:
        return None
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:  # a record from YAML may need the lenient path (keys that are not strings)
        return dumps_str(value)


def _error(value: Any) -> dict[str, Any] | None:
    """``{code, message}`` typed as the column is: a code that is not an integer, or other fields, cannot fit."""
    if not isinstance(value, dict):
        return None
    code = value.get("code")
    message = value.get("message")
    return {"code": code if type(code) is int else None, "message": None if message is None else str(message)}
