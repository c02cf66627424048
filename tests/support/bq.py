"""A real BigQuery emulator for tests: PyPI `bqemulator` (DuckDB + sqlglot), in memory, in a subprocess.

Offline, bqemulator stops at start trying to download DuckDB's `spatial` extension; the few lines in `_LAUNCH`
replace `DuckDBEngine._load_spatial` with a no-op first (no GEOGRAPHY, which batchflow does not use), then run
its own `start` command (docs/google-apis.md, "Local stand-ins").
"""

from __future__ import annotations

import importlib.util
import io
import json
import sys
from collections.abc import Iterable
from typing import Any

from support.servers import Server, free_port, start_server

PROJECT = "test"  # the emulator's default project

_LAUNCH = """
import sys
from bqemulator.storage.engine import DuckDBEngine
DuckDBEngine._load_spatial = lambda self: None
from bqemulator.cli import main
sys.exit(main(sys.argv[1:]))
"""


def installed() -> bool:
    """Whether bqemulator and google-cloud-bigquery are importable here."""
    return all(importlib.util.find_spec(m) is not None for m in ("bqemulator", "google.cloud.bigquery"))


def start_bigquery_emulator(project: str = "test", timeout: float = 60.0) -> Server:
    """Start an in-memory BigQuery emulator on 127.0.0.1 and return once it answers HTTP.

    Its `url` is what BIGQUERY_EMULATOR_HOST should be.
    """
    port = free_port()
    command = [sys.executable, "-c", _LAUNCH, "start", "--rest-host", "127.0.0.1", "--rest-port", str(port),
               "--grpc-host", "127.0.0.1", "--grpc-port", str(free_port()), "--ephemeral", "--project", project,
               "--log-level", "warning"]
    return start_server("bqemulator", command, port, f"/bigquery/v2/projects/{project}/datasets", timeout, 0.1)


def client() -> Any:
    """google-cloud-bigquery on the emulator (BIGQUERY_EMULATOR_HOST, set by the `bigquery_emulator` fixture)."""
    from batchflow.libs import bigquery as bq

    return bq.client(PROJECT)


def make_table(table: str, schema: list[tuple[str, str]], rows: Iterable[dict[str, Any]]) -> str:
    """A table of these rows (dataset made as needed), loaded as newline-delimited JSON."""
    from google.cloud import bigquery

    c = client()
    project, dataset, _ = table.split(".")
    c.create_dataset(f"{project}.{dataset}", exists_ok=True)
    data = io.BytesIO("".join(json.dumps(r) + "\n" for r in rows).encode())
    config = bigquery.LoadJobConfig(schema=[bigquery.SchemaField(n, t) for n, t in schema],
                                    source_format="NEWLINE_DELIMITED_JSON", write_disposition="WRITE_TRUNCATE")
    c.load_table_from_file(data, table, job_config=config).result()
    return table


def count(table: str) -> int:
    return int(next(iter(client().query(f"SELECT COUNT(*) AS n FROM `{table}`").result()))["n"])
