"""One door to google-cloud-bigquery: the client, table names, values made JSON-friendly, errors sorted.

With ``BIGQUERY_EMULATOR_HOST`` set (the variable google-cloud-bigquery itself reads), the client talks to that
emulator with anonymous credentials: no credential lookup, so nothing probes the network beyond the emulator.
Without it, Application Default Credentials are used as Google's own tools use them.

google-cloud-bigquery is an extra (``pip install 'batchflow[bigquery]'``), imported only when a BigQuery
source or output is opened, so ``--help`` and ``validate`` stay fast and work without it.

Values, as a record's fields (docs/backends.md, "BigQuery"): INT64 and FLOAT64 stay numbers, BOOL true/false, STRING as
it is; NUMERIC and BIGNUMERIC become **strings** holding the exact decimal ("1.500000000"), since a float would lose
digits; DATE, DATETIME, TIME and TIMESTAMP become ISO 8601 strings (a TIMESTAMP with its ``+00:00``); BYTES
become base64 text, as BigQuery's own JSON API gives them; JSON columns are parsed; STRUCT is an object and
ARRAY a list, converted the same way inside.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from batchflow.errors import BatchflowError, DataError, SpecError, TransientError
from batchflow.libs.deadlines import api_core_retry, bigquery_job_config, deadlines, timed_out, timed_out_error

EMULATOR_VARIABLE = "BIGQUERY_EMULATOR_HOST"
_TRANSIENT = frozenset({408, 429, 500, 502, 503, 504})
_TABLE = re.compile(r"^(?:bq://)?([^.\s`]+)\.([^.\s`]+)\.([^.\s`]+)$")


@dataclass(frozen=True)
class TableId:
    """``project.dataset.table``, as written in a spec (a ``bq://`` prefix is dropped)."""

    project: str
    dataset: str
    table: str

    @classmethod
    def parse(cls, text: str) -> TableId:
        found = _TABLE.match(text.strip())
        if found is None:
            raise SpecError(f"expected a table as project.dataset.table, got {text!r}")
        return cls(*found.groups())

    def __str__(self) -> str:
        return f"{self.project}.{self.dataset}.{self.table}"

    @property
    def sql(self) -> str:
        """The table quoted for Standard SQL."""
        return f"`{self}`"

    @property
    def uri(self) -> str:
        """``bq://project.dataset.table``, as Vertex batch jobs name tables."""
        return f"bq://{self}"

    def sibling(self, name: str) -> TableId:
        """Another table in the same dataset."""
        return TableId(self.project, self.dataset, name)


def client(project: str, location: str | None = None) -> Any:
    """A BigQuery client for ``project``: anonymous against an emulator, else Application Default Credentials."""
    try:
        from google.cloud import bigquery
    except ImportError:
        raise SpecError("BigQuery sources and outputs need google-cloud-bigquery: "
                        "pip install 'batchflow[bigquery]'") from None
    d = deadlines()
    # BigQuery's own job timeout (jobTimeoutMs) on every query and load job this client starts
    jobs = {"default_query_job_config": bigquery_job_config(d, bigquery.QueryJobConfig()),
            "default_load_job_config": bigquery_job_config(d, bigquery.LoadJobConfig())}
    host = os.environ.get(EMULATOR_VARIABLE)
    if host:
        from google.auth.credentials import AnonymousCredentials

        endpoint = host if "://" in host else f"http://{host}"
        return bigquery.Client(project, credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
                               location=location, client_options={"api_endpoint": endpoint}, **jobs)
    from google.auth.exceptions import DefaultCredentialsError

    try:
        return bigquery.Client(project, location=location, **jobs)
    except DefaultCredentialsError as exc:  # a fault that will not cure itself: one line, exit 1
        raise BatchflowError(f"BigQuery (project {project}): no usable credentials: {exc}") from None


def call() -> dict[str, Any]:
    """``timeout=`` and ``retry=`` for one BigQuery API call (libs/deadlines.py): google-cloud-bigquery's default
    waits forever per request; this waits a call's deadline per request, and its retries end within a bound."""
    from google.cloud.bigquery.retry import DEFAULT_RETRY

    d = deadlines()
    return {"timeout": d.call, "retry": api_core_retry(d, DEFAULT_RETRY)}


def job_wait() -> dict[str, Any]:
    """``timeout=`` for ``job.result()``: as long as BigQuery's own job timeout, and a call's wait beyond."""
    d = deadlines()
    return {"timeout": d.bigquery_job + d.call}


def host() -> str:
    """Where BigQuery calls go: the emulator named by BIGQUERY_EMULATOR_HOST, else Google's."""
    named = os.environ.get(EMULATOR_VARIABLE, "")
    return named.split("://", 1)[-1].rstrip("/") or "bigquery.googleapis.com"


@contextmanager
def api_errors(what: str) -> Iterator[None]:
    """Sort google-api-core's errors: 4xx is the user's to fix (exit 2), 408/429/5xx and transport transient."""
    from google.api_core import exceptions

    try:
        yield
    except exceptions.GoogleAPICallError as exc:
        _raise_if_timed_out(what, exc)
        code = int(exc.code or 0)
        message = f"{what}: BigQuery answered {code}: {exc.message}"
        raise (TransientError if code in _TRANSIENT else DataError)(message) from exc
    except (exceptions.RetryError, ConnectionError, TimeoutError) as exc:
        _raise_if_timed_out(what, exc)
        raise TransientError(f"{what}: {type(exc).__name__}: {exc}") from exc
    except OSError as exc:  # requests' errors are OSErrors, its timeouts among them
        _raise_if_timed_out(what, exc)
        raise BatchflowError(f"{what}: {exc}") from exc


def _raise_if_timed_out(what: str, exc: Exception) -> None:
    """A call that got no answer in time, past its retries: the one line a run ends with (exit 75)."""
    if timed_out(exc):
        raise timed_out_error(what, host(), deadlines().call) from exc


def json_value(value: Any) -> Any:
    """A value as google-cloud-bigquery gives it -> the JSON-friendly value a record holds (module doc)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dt.date | dt.time):  # datetime is a date
        return value.isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_value(v) for v in value]
    return str(value)  # e.g. an INTERVAL (relativedelta): its text


def quote_name(name: str) -> str:
    """A column name quoted for Standard SQL."""
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"
