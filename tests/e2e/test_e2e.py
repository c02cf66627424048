"""End to end as a user runs it: the CLI as a subprocess, a separately started emulator, the real SDK."""

from __future__ import annotations

import json
import os
import shutil
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from conftest import genai_client
from support.helpers import cli_process, read_rows, write_jsonl, write_spec

from batchflow.state.state import StateStore


def _stats(base_url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{base_url}/_emulator/stats") as resp:
        stats: dict[str, Any] = json.load(resp)
    return stats


def _creates(base_url: str, spec_name: str) -> dict[str, int]:
    made = _stats(base_url)["creates_by_display_name"]
    return {k: v for k, v in made.items() if k.startswith(f"batchflow-{spec_name}-")}


def _jobs_seen_by_the_sdk(base_url: str, spec_name: str) -> dict[str, int]:
    """display name -> requestCount of this spec's jobs, as google-genai lists them."""
    client = genai_client(base_url)
    found = {}
    for job in client.batches.list():
        if (job.display_name or "").startswith(f"batchflow-{spec_name}-"):
            raw = json.loads(client._api_client.request("get", job.name, {}).body)
            found[job.display_name] = int(raw["metadata"]["batchStats"]["requestCount"])
    return found


def test_quickstart_runs_from_another_directory_and_writes_a_row_per_record(tmp_path: Path,
                                                                            repo_root: Path) -> None:
    shutil.copytree(repo_root / "specs", tmp_path / "specs", ignore=shutil.ignore_patterns("out", ".batchflow"))
    done = cli_process("run", "specs/quickstart.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    records = (tmp_path / "specs/data/reviews.jsonl").read_text().splitlines()
    rows = read_rows(tmp_path / "specs/out/quickstart.jsonl")
    assert len(rows) == len(records) == 40
    assert all(r["status"] == "ok" and r["parsed"]["sentiment"] in {"positive", "negative", "neutral"}
               for r in rows)
    elsewhere = cli_process("run", str(tmp_path / "specs/quickstart.yaml"), cwd=tmp_path / "specs/data")
    assert elsewhere.returncode == 0 and "job submitted" not in elsewhere.stderr


@pytest.mark.slow
def test_70001_records_make_three_jobs_and_a_rerun_makes_none(tmp_path: Path, emulator_url: str) -> None:
    write_jsonl(tmp_path / "data/in.jsonl", ({"id": f"k{i:06d}", "text": f"t{i}"} for i in range(70_001)))
    spec = write_spec(tmp_path, name="big", backend={"type": "gemini", "base_url": emulator_url},
                      output={"type": "files", "path": "out/result.jsonl", "include_record": False})
    first = cli_process("run", str(spec))
    assert first.returncode == 0, first.stderr
    jobs = _jobs_seen_by_the_sdk(emulator_url, "big")
    assert sorted(jobs.values()) == [10_001, 30_000, 30_000]
    rows = read_rows(tmp_path / "out/result.jsonl")
    assert [r["key"] for r in rows] == [f"k{i:06d}" for i in range(70_001)]
    assert all(r["status"] == "ok" for r in rows)
    again = cli_process("run", str(spec))
    assert again.returncode == 0, again.stderr
    assert _jobs_seen_by_the_sdk(emulator_url, "big") == jobs
    assert set(_creates(emulator_url, "big").values()) == {1}


def test_a_job_created_just_before_a_crash_is_adopted_not_created_twice(tmp_path: Path, emulator_url: str) -> None:
    write_jsonl(tmp_path / "data/in.jsonl", ({"id": f"a{i}", "text": "x"} for i in range(30)))
    spec = write_spec(tmp_path, name="adopt", backend={"type": "gemini", "base_url": emulator_url},
                      jobs={"max_requests": 10, "poll_interval": "0.2s"})
    assert cli_process("run", "--no-wait", str(spec)).returncode == 75
    store = StateStore(tmp_path / ".batchflow/adopt")
    state = store.load()
    assert state is not None
    for shard in state.shards:  # as if each run died after `create` and before saving what it returned
        job = shard.jobs[0]
        job.status, job.name, job.output = "submitting", None, None
    store.save(state)
    done = cli_process("run", str(spec))
    assert done.returncode == 0, done.stderr
    assert done.stderr.count('"job adopted"') == 3
    assert sorted(_creates(emulator_url, "adopt").values()) == [1, 1, 1]
    assert len(read_rows(tmp_path / "out/result.jsonl")) == 30


def test_a_second_concurrent_run_exits_75_naming_the_holder(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "data/in.jsonl", [{"id": "a", "text": "x"}])
    spec = write_spec(tmp_path, name="locked")
    with StateStore(tmp_path / ".batchflow/locked").lock():
        done = cli_process("run", str(spec))
    assert done.returncode == 75
    assert f"pid {os.getpid()}" in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_the_api_key_never_reaches_state_logs_or_output(tmp_path: Path, emulator_url: str) -> None:
    secret = "AIza-not-a-real-key-0123456789"
    write_jsonl(tmp_path / "data/in.jsonl", [{"id": "a", "text": "x"}, {"id": "b", "text": "y"}])
    spec = write_spec(tmp_path, name="secret",
                      backend={"type": "gemini", "base_url": emulator_url, "api_key_env": "MY_KEY"},
                      output={"type": "files", "path": "out/result.jsonl", "include_response": True})
    done = cli_process("-v", "run", str(spec), env={**os.environ, "MY_KEY": secret})
    assert done.returncode == 0, done.stderr
    assert secret not in done.stdout + done.stderr
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


def test_a_gemini_spec_without_its_key_variable_exits_2_with_nothing_submitted(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "data/in.jsonl", [{"id": "a", "text": "x"}])
    spec = write_spec(tmp_path, name="nokey", backend={"type": "gemini", "api_key_env": "UNSET_KEY_VAR"})
    env = {k: v for k, v in os.environ.items() if k != "UNSET_KEY_VAR"}
    done = cli_process("run", str(spec), env=env)
    assert done.returncode == 2
    assert "UNSET_KEY_VAR" in done.stderr.strip().splitlines()[-1]


def test_a_job_left_submitting_but_never_created_is_looked_up_twice_then_created_once(
        tmp_path: Path, emulator_url: str) -> None:
    write_jsonl(tmp_path / "data/in.jsonl", ({"id": f"n{i}", "text": "x"} for i in range(5)))
    spec = write_spec(tmp_path, name="never", backend={"type": "gemini", "base_url": emulator_url})
    store = StateStore(tmp_path / ".batchflow/never")
    assert cli_process("plan", str(spec)).returncode == 0
    first = cli_process("run", "--no-wait", str(spec))
    assert first.returncode == 75
    state = store.load()
    assert state is not None
    job = state.shards[0].jobs[0]
    job.status, job.name, job.display_name = "submitting", None, job.display_name + "-x"  # as if create never ran
    store.save(state)
    done = cli_process("run", str(spec))
    assert done.returncode == 0, done.stderr
    assert done.stderr.count('"job not found; looking again before creating it"') == 1
    assert '"job adopted"' not in done.stderr
    assert _creates(emulator_url, "never") == {state.shards[0].jobs[0].display_name[:-2]: 1,
                                               state.shards[0].jobs[0].display_name: 1}
    saved = store.load()
    assert saved is not None and saved.shards[0].jobs[0].lookups == 0
