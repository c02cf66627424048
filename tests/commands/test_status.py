"""`status` asks the service: jobs as it reports them, beside the state, which it never writes."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from conftest import genai_client
from support.helpers import cli, write_jsonl, write_spec
from support.servers import batchflow_emulator


def _status(spec: Path, *flags: str) -> dict[str, Any]:
    result = cli("status", "--json", *flags, str(spec))
    assert result.exit_code == 0, result.stderr
    found: dict[str, Any] = json.loads(result.stdout)
    return found


def _wait_until_succeeded(url: str, spec_name: str, count: int) -> None:
    client = genai_client(url)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        states = [str(job.state) for job in client.batches.list(config={"page_size": 100})
                  if job.display_name and f"-{spec_name}-" in job.display_name]
        if len(states) == count and all(s.endswith("SUCCEEDED") for s in states):
            return
        time.sleep(0.2)
    raise AssertionError(f"the emulator's jobs did not succeed: {states}")


def test_status_shows_jobs_the_service_finished_while_the_state_says_running(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "data/in.jsonl", [{"id": f"r{i}", "text": "x"} for i in range(5)])
    with batchflow_emulator(tmp_path / "emulator", job_seconds=1.5) as url:
        spec = write_spec(tmp_path, name="seen", backend={"type": "gemini", "base_url": url},
                          jobs={"max_requests": 1, "max_concurrent": 5})
        assert cli("run", "--no-wait", str(spec)).exit_code == 75
        state_file = tmp_path / ".batchflow/seen/state.json"
        before = state_file.read_bytes(), state_file.stat().st_mtime_ns
        offline = _status(spec, "--offline")
        assert {j["local_status"] for j in offline["jobs"]} <= {"submitted", "running"}
        _wait_until_succeeded(url, "seen", 5)
        seen = _status(spec)
        text = cli("status", str(spec)).stdout
    assert seen["source"] == "service" and seen["counts"] == {"SUCCEEDED": 5}
    assert all(j["from_service"] and j["local_status"] in {"submitted", "running"} for j in seen["jobs"])
    assert all(j["name"].startswith("batches/") and j["age_seconds"] >= 0 for j in seen["jobs"])
    assert "as of " in text and "SUCCEEDED (the state says submitted)" in text
    assert (state_file.read_bytes(), state_file.stat().st_mtime_ns) == before  # status never writes the state


def test_status_offline_reads_the_state_alone(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "data/in.jsonl", [{"id": "a", "text": "x"}])
    spec = write_spec(tmp_path)
    assert cli("run", str(spec)).exit_code == 0
    data = _status(spec, "--offline")
    assert data["source"] == "state (--offline)" and data["counts"] == {"SUCCEEDED": 1}
    assert data["jobs"][0]["local_status"] == "collected" and not data["jobs"][0]["from_service"]
    assert data["kept"] == {"ok": 1, "kept_errors": 0, "retry": 0} and data["merged"]["rows"] == 1


def test_status_before_any_run(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "data/in.jsonl", [{"id": "a", "text": "x"}])
    assert _status(write_spec(tmp_path))["run"] is False


def test_status_counts_errors_by_cause_and_run_json_says_how_a_run_ended(tmp_path: Path) -> None:
    (tmp_path / "faults.yaml").write_text(json.dumps({"seed": 2, "requests": {"fail": 0.05}}))
    write_jsonl(tmp_path / "data/in.jsonl", [{"id": f"k{i}", "text": f"t{i}"} for i in range(400)])
    with batchflow_emulator(tmp_path / "emulator", job_seconds=0.2, faults=tmp_path / "faults.yaml") as url:
        spec = write_spec(tmp_path, name="causes", backend={"type": "gemini", "base_url": url},
                          retry={"request_attempts": 1})
        ended = cli("run", "--json", str(spec))
        data = _status(spec)
    assert ended.exit_code == 1 and json.loads(ended.stdout)["exit_code"] == 1
    assert "records failed" in json.loads(ended.stdout)["error"]
    failed = data["merged"]["failed"]
    assert failed > 0 and sum(data["errors"].values()) == failed
    assert all(cause.split(":")[0] in {"429", "500", "503"} for cause in data["errors"])


def test_several_specs_with_json_keep_stdout_to_json_lines(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "data/in.jsonl", [{"id": "a", "text": "x"}])
    first, second = write_spec(tmp_path, name="one"), write_spec(tmp_path, name="two")
    result = cli("status", "--json", "--offline", str(first), str(second))
    assert result.exit_code == 0, result.stderr
    assert [json.loads(line)["spec"] for line in result.stdout.splitlines()] == ["one", "two"]
