"""Parquet files as a ``files`` source: streamed record batch by record batch through pyarrow.

pyarrow is an extra (``pip install 'batchflow[parquet]'``), imported through ``batchflow.libs.arrow`` only when a
Parquet file is read or written, so the other formats, ``--help`` and ``validate`` of other specs never pay for it.

Memory stays flat whatever the file's row groups: column chunks are read through a buffered stream (pages, not
whole row groups, in memory) and records are made one batch at a time. Reads are sequential and single-threaded,
so the bytes read, and the content digest made of them, are the same on every run of the same file.

Values become the JSON-friendly ones a BigQuery source gives (``batchflow.libs.bigquery.json_value``): integers, floats,
booleans, strings and nulls as they are, lists and structs as lists and objects; decimals as exact decimal
strings, dates and timestamps as ISO 8601 strings, binary as base64. ``where`` is ``data/x.parquet:row N``
(1-based over the file's rows), the ``place:position`` shape of a JSON Lines ``data/x.jsonl:N``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

from batchflow.errors import DataError
from batchflow.libs.arrow import arrow, release_unused
from batchflow.libs.bigquery import json_value
from batchflow.sources.base import BadRecord, Item

BATCH_ROWS = 4_096  # records made at a time: small enough to stay flat, large enough to amortise the calls
_STREAM_BUFFER = 1 << 20  # bytes read at a time from a column chunk (0 would read a whole row group's chunk)


def read_parquet(f: BinaryIO, name: str, bad: BadRecord) -> Iterator[Item]:
    """Records of a Parquet file, one per row, in the file's order (``where``: ``name:row N``)."""
    pa, pq = arrow()
    try:
        parquet = pq.ParquetFile(f, buffer_size=_STREAM_BUFFER, pre_buffer=False)
        convert = _converters(parquet.schema_arrow, name)
        row = 0
        for batch in parquet.iter_batches(batch_size=BATCH_ROWS, use_threads=False):
            for record in batch.to_pylist():
                row += 1
                for column, to_json in convert:
                    record[column] = to_json(record[column])
                yield record, None, f"{name}:row {row}", 0
    except (pa.ArrowException, OSError) as exc:  # a file that is not Parquet, or is cut short
        raise DataError(f"{name}: cannot read as Parquet: {exc}") from None
    finally:
        release_unused()


def _converters(schema: Any, name: str) -> list[tuple[str, Callable[[Any], Any]]]:
    """The columns whose Python values are not JSON already (decimals, dates, binary, ... at any depth); the
    others are left alone, so a file of plain columns costs no per-value work."""
    names = schema.names
    if len(set(names)) != len(names):
        duplicate = next(n for n in names if names.count(n) > 1)
        raise DataError(f"{name}: duplicate column {duplicate!r}")  # as a CSV header's
    return [(field.name, json_value) for field in schema if not _is_json(field.type)]


def _is_json(kind: Any) -> bool:
    """Whether ``to_pylist`` gives this Arrow type as values orjson writes and templates read as JSON would (a
    type not named here, a view type included, goes through ``json_value``: right, only slower)."""
    import pyarrow.types as t

    if t.is_integer(kind) or t.is_floating(kind) or t.is_boolean(kind) or t.is_null(kind):
        return True
    if t.is_string(kind) or t.is_large_string(kind):
        return True
    if t.is_list(kind) or t.is_large_list(kind) or t.is_fixed_size_list(kind):
        return _is_json(kind.value_type)
    if t.is_struct(kind):
        return all(_is_json(kind.field(i).type) for i in range(kind.num_fields))
    return False
