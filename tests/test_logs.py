from __future__ import annotations

import json

import pytest
import structlog
from structlog.testing import capture_logs

from batchflow.logs import Progress, configure


def test_progress_speaks_at_most_once_per_interval() -> None:
    with capture_logs() as logs:
        quiet = Progress("preparing", every=3600)
        for n in range(1000):
            quiet.tick(records=n)
        eager = Progress("merging", every=0)
        eager.tick(rows=5)
        eager.tick(rows=9)
    assert [(e["event"], e.get("rows")) for e in logs] == [("merging", 5), ("merging", 9)]


def test_json_logs_carry_a_severity_for_cloud_logging(capsys: pytest.CaptureFixture[str]) -> None:
    configure("json")
    try:
        Progress("merging", every=0).tick(rows=1)
    finally:
        structlog.reset_defaults()  # configure bound this test's captured stderr
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["severity"] == "INFO" and line["event"] == "merging" and line["rows"] == 1
