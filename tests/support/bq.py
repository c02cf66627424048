"""A real BigQuery emulator for tests: PyPI `bqemulator` (DuckDB + sqlglot), in memory, in a subprocess.

Offline, bqemulator stops at start trying to download DuckDB's `spatial` extension; the few lines in `_LAUNCH`
replace `DuckDBEngine._load_spatial` with a no-op first (no GEOGRAPHY, which batchflow does not use), then run
its own `start` command (docs/google-apis.md, "Local stand-ins").
"""

from __future__ import annotations

import importlib.util
import sys

from support.servers import Server, free_port, start_server

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
