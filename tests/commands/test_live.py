"""The live view: on a terminal (a real pty) a table of jobs and an overall line; without one, JSON logs as before."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pexpect
from support.helpers import write_jsonl, write_spec
from support.servers import batchflow_emulator

from batchflow import logs


def _records(tmp_path: Path, count: int = 6) -> None:
    write_jsonl(tmp_path / "data/in.jsonl", [{"id": f"r{i}", "text": "x"} for i in range(count)])


def test_run_on_a_terminal_shows_the_jobs_the_cost_and_an_eta(tmp_path: Path) -> None:
    _records(tmp_path)
    with batchflow_emulator(tmp_path / "emulator", job_seconds=1.5) as url:
        spec = write_spec(tmp_path, name="shown", backend={"type": "gemini", "base_url": url},
                          jobs={"max_requests": 2, "max_concurrent": 2, "poll_interval": "0.3s"})
        seen = io.StringIO()
        env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "160", "LINES": "40"}
        child = pexpect.spawn(sys.executable, ["-m", "batchflow", "run", str(spec)], cwd=str(tmp_path), env=env,
                              encoding="utf-8", timeout=120, dimensions=(40, 160))
        child.logfile_read = seen
        child.expect("done/failed/total")  # the table's header, while jobs run
        child.expect("units done; jobs:")
        child.expect(r"6 records: 6 ok, 0 failed")
        child.expect(pexpect.EOF)
        child.close()
    shown = seen.getvalue()
    assert child.exitstatus == 0, shown
    assert "next poll" in shown and "batches/" in shown and "cost so far $" in shown and "ETA" in shown
    assert "SUBMITTED" in shown or "RUNNING" in shown  # a job seen in flight, as the service reported it
    assert "SUCCEEDED" in shown or "COLLECTED" in shown
    assert '{"' not in shown  # console logs on a terminal, not JSON


def test_without_a_terminal_the_logs_stay_json_lines(tmp_path: Path) -> None:
    _records(tmp_path)
    spec = write_spec(tmp_path)  # --log-format left to auto: stderr is a pipe here, as under cron
    done = subprocess.run([sys.executable, "-m", "batchflow", "run", str(spec)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    events: list[dict[str, Any]] = [json.loads(line) for line in lines]  # every line is a JSON object
    assert "merged" in {e["event"] for e in events} and all("severity" in e for e in events)
    assert "\x1b[" not in done.stderr and "done/failed/total" not in done.stderr
    assert done.stdout.startswith("6 records: 6 ok, 0 failed")


def test_local_progress_goes_to_the_live_view_at_once() -> None:
    shown: list[tuple[str, dict[str, Any]]] = []
    with logs.progress_to(lambda event, fields: shown.append((event, fields))):
        logs.Progress("preparing").tick(records=10)
    logs.Progress("preparing").tick(records=20)  # no view: only the logs, every few seconds
    assert shown == [("preparing", {"records": 10})]
