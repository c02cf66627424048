"""Logs: the CLI configures them; as a library batchflow writes none unless its caller configures structlog."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import structlog
from structlog.testing import capture_logs
from support.helpers import write_jsonl, write_spec

from batchflow.logs import Progress, configure, get_logger


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


def test_an_unconfigured_logger_writes_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    structlog.reset_defaults()  # as in a program that never configured structlog
    get_logger("batchflow.somewhere").warning("job_failed", job="batches/1")
    assert capsys.readouterr() == ("", "")


def test_a_configured_logger_writes_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    configure("json")
    try:
        get_logger("batchflow.somewhere").warning("job_failed", job="batches/1")
    finally:
        structlog.reset_defaults()
    out, err = capsys.readouterr()
    assert out == "" and json.loads(err)["job"] == "batches/1"


def test_the_python_api_prints_nothing_into_the_callers_output(tmp_path: Path) -> None:
    """A whole run through the API in a fresh process: the caller's stdout and stderr stay its own."""
    write_jsonl(tmp_path / "data/in.jsonl", [{"id": str(n), "text": f"t{n}"} for n in range(30)])
    spec = write_spec(tmp_path, jobs={"max_requests": 10, "poll_interval": "0.2s"})
    code = ("import sys, batchflow; s = batchflow.run(batchflow.load_spec(sys.argv[1], state_dir=sys.argv[2]));"
            "assert (s.records, s.ok) == (30, 30), s")
    done = subprocess.run([sys.executable, "-c", code, str(spec), str(tmp_path / "state")],
                          capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
