"""The ``bigquery`` source: a table or a query, streamed page by page (memory stays flat at one page).

The row order is defined, so ordinals (the default key) and shard contents are the same on every run:

1. ``source.order_by`` (a SQL ``ORDER BY`` list, e.g. ``"created_at, id"``) when the spec gives one;
2. else the key's column, when ``key`` is a single column (``"{{ review_id }}"``);
3. else, for a table, the order BigQuery lists its rows in (``tabledata.list``: stable while the table is
   unchanged, but not promised by BigQuery); a query has no order of its own, so it needs 1 or 2.

``where`` is ``project.dataset.table[N]`` or ``query[N]`` (N 1-based, in that order). Values become JSON-friendly
as ``batchflow.libs.bigquery`` says (DATE/TIMESTAMP as ISO strings, NUMERIC as exact decimal strings).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from typing import Any

from batchflow.errors import SpecError
from batchflow.libs import bigquery as bq
from batchflow.sources.base import Item, Reject, Source
from batchflow.spec.spec import SourceSpec

PAGE_SIZE = 5_000


def query_project(spec: SourceSpec) -> str:
    """The project that runs the source's queries: ``source.project``, the table's, or GOOGLE_CLOUD_PROJECT."""
    if spec.project:
        return spec.project
    if spec.table:
        return bq.TableId.parse(spec.table).project
    found = os.environ.get("GOOGLE_CLOUD_PROJECT")
    if not found:
        raise SpecError("source.project: a bigquery query needs the project that runs it "
                        "(source.project, or GOOGLE_CLOUD_PROJECT)")
    return found


def ordered_sql(spec: SourceSpec) -> str | None:
    """The query the records are read with, ordered; None when a table is listed as it is (rule 3).

    ``spec.order_by`` already holds rule 2: ``load_spec`` fills it in from a one-column key.
    """
    order = spec.order_by
    inner = spec.query.strip().rstrip(";") if spec.query else f"SELECT * FROM {bq.TableId.parse(str(spec.table)).sql}"
    if order is None:
        if spec.query:
            raise SpecError("source.order_by: a bigquery query needs order_by (or a key that is one column, "
                            "\"{{ id }}\") so that the records come in the same order on every run")
        return None
    return f"SELECT * FROM (\n{inner}\n) ORDER BY {order}"


class BigQuerySource(Source):
    """The rows of ``source.table`` or ``source.query``, in a defined order (module doc)."""

    def __init__(self, spec: SourceSpec, reject: Reject | None = None) -> None:
        if not (spec.table or spec.query):
            raise SpecError("source: a bigquery source needs 'table' or 'query'")
        self.spec = spec
        self.label = str(bq.TableId.parse(spec.table)) if spec.table else "query"
        self.sql = ordered_sql(spec)
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = bq.client(query_project(self.spec), self.spec.location)
        return self._client

    def items(self, unparsed: bool = False) -> Iterator[Item]:
        for n, row in enumerate(self._rows(), start=1):
            yield {name: bq.json_value(value) for name, value in row.items()}, None, f"{self.label}[{n}]", 0

    def _rows(self) -> Iterator[Any]:
        with bq.api_errors(f"source {self.label}"):
            if self.sql is None:
                pages = self.client.list_rows(str(self.spec.table), page_size=PAGE_SIZE, **bq.call())
            else:
                pages = self.client.query(self.sql, **bq.call()).result(page_size=PAGE_SIZE, **bq.job_wait())
            yield from pages  # one page in memory at a time: the iterator fetches the next when needed

    def fingerprint(self) -> str:
        parts = [self.sql or "", self.spec.query or ""]
        if self.spec.table:
            with bq.api_errors(f"source {self.label}"):
                table = self.client.get_table(str(self.spec.table), **bq.call())
            parts += [str(table.etag), str(table.modified), str(table.num_rows)]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()

    def describe(self) -> str:
        return f"BigQuery table {self.label}" if self.spec.table else "a BigQuery query"
