"""The runner under the emulator's seeded fault plans: transient HTTP errors, failed and expired jobs, failed
requests. Retries must suffice when the policy allows them, and be reported by key when they run out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.helpers import cli_process, read_rows, write_jsonl, write_spec

from batchflow.emulator import start_in_thread
from batchflow.state.state import StateStore

PLAN = {
    "seed": 11,
    "http": {"*": {"rate": 0.10, "codes": [429, 500, 503]}},
    "jobs": {"fail": 0.2, "expire": 1},
    "requests": {"fail": 0.02},
}


def _run(tmp_path: Path, n: int, plan: dict[str, Any], **spec: Any) -> tuple[Any, dict[str, Any]]:
    (tmp_path / "faults.yaml").write_text(yaml.safe_dump(plan))
    write_jsonl(tmp_path / "data/in.jsonl", ({"id": f"k{i:06d}", "text": f"t{i}"} for i in range(n)))
    with start_in_thread(tmp_path / "emulator", job_seconds=0.2, faults=tmp_path / "faults.yaml") as running:
        path = write_spec(tmp_path, name="faulty", backend={"type": "gemini", "base_url": running.base_url},
                          output={"type": "files", "path": "out/result.jsonl", "include_record": False}, **spec)
        done = cli_process("run", str(path), timeout=600)
        return done, running.engine.stats()


@pytest.mark.slow
def test_50000_records_under_faults_all_end_ok_and_the_state_records_the_retries(tmp_path: Path) -> None:
    done, stats = _run(tmp_path, 50_000, PLAN, jobs={"max_requests": 5_000, "poll_interval": "0.1s"},
                       # every job, resubmissions too, fails with p = 0.2: five attempts make a record's loss ~3e-4
                       retry={"job_attempts": 5, "request_attempts": 4,
                              "backoff": {"initial": "0.05s", "max": "0.2s"}})
    assert done.returncode == 0, done.stderr[-3000:]
    faults = stats["faults"]
    assert faults.get("job_failed", 0) >= 1 and faults.get("job_expired") == 1
    assert faults.get("line_error_500", 0) + faults.get("line_error_503", 0) + faults.get("line_error_429", 0) > 500
    assert sum(v for k, v in faults.items() if k.startswith("http_")) > 10
    rows = read_rows(tmp_path / "out/result.jsonl")
    assert [r["key"] for r in rows] == [f"k{i:06d}" for i in range(50_000)]
    assert all(r["status"] == "ok" for r in rows)
    state = StateStore(tmp_path / ".batchflow/faulty").load()
    assert state is not None
    kinds = [j.kind for _, j in state.jobs()]
    assert kinds.count("resubmit") >= faults["job_failed"] + faults["job_expired"]
    assert kinds.count("retry") >= 1
    ended = [j.ended for _, j in state.jobs()]
    assert ended.count("expired") == 1 and ended.count("failed") == faults["job_failed"]
    creates = {k: v for k, v in stats["creates_by_display_name"].items() if k.startswith("batchflow-faulty-")}
    assert max(creates.values()) == 1, "no job was created twice"


def test_with_request_retries_exhausted_the_failed_records_are_in_the_output_with_errors(tmp_path: Path) -> None:
    plan = {"seed": 2, "requests": {"fail": 0.05}}
    done, stats = _run(tmp_path, 2_000, plan, retry={"request_attempts": 1})
    assert done.returncode == 1
    assert "records failed" in done.stderr.strip().splitlines()[-1]
    rows = read_rows(tmp_path / "out/result.jsonl")
    failed = [r for r in rows if r["status"] == "error"]
    assert len(rows) == 2_000
    assert len(failed) == sum(v for k, v in stats["faults"].items() if k.startswith("line_error")) > 0
    assert all(r["error"]["code"] in (429, 500, 503) and r["error"]["message"] for r in failed)


def test_a_job_that_keeps_failing_ends_its_records_in_error_after_job_attempts(tmp_path: Path) -> None:
    done, stats = _run(tmp_path, 50, {"seed": 1, "jobs": {"fail": 1.0}},
                       retry={"job_attempts": 2, "backoff": {"initial": "0.05s"}})
    assert done.returncode == 1
    assert stats["faults"]["job_failed"] == 2
    rows = read_rows(tmp_path / "out/result.jsonl")
    assert len(rows) == 50 and all(r["status"] == "error" for r in rows)
    assert "ended failed: " in rows[0]["error"]["message"], "the job's own error is kept"


def test_a_create_that_succeeds_but_answers_503_is_adopted_not_repeated(tmp_path: Path) -> None:
    plan = {"seed": 4, "http": {"create": {"rate": 1.0, "codes": [503], "after": True}}}
    done, stats = _run(tmp_path, 30, plan, jobs={"max_requests": 10, "poll_interval": "0.1s"})
    assert done.returncode == 0, done.stderr[-2000:]
    creates = {k: v for k, v in stats["creates_by_display_name"].items() if k.startswith("batchflow-faulty-")}
    assert sorted(creates.values()) == [1, 1, 1]
    assert done.stderr.count('"job adopted"') == 3
    assert json.loads((tmp_path / "out/result.jsonl").read_text().splitlines()[0])["status"] == "ok"
