"""Staging while preparing: each unit uploaded as it is written; a failed preparation leaves nothing staged."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from conftest import genai_client
from support.helpers import cli, read_rows, write_jsonl, write_spec

from batchflow.emulator import start_in_thread
from batchflow.prepare.prepare import prepare
from batchflow.spec.spec import load_spec
from batchflow.state.state import COLLECTED, state_store


def _records(n: int, bad_last: bool = False) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = [{"id": f"k{i:03d}", "text": f"t{i}"} for i in range(n)]
    if bad_last:
        del records[-1]["text"]  # the template needs it: the last record fails to render
    return records


def _calls(running: Any) -> dict[str, int]:
    calls: dict[str, int] = running.engine.stats()["calls_by_endpoint"]
    return calls


def _uploads(calls: dict[str, int]) -> int:
    return calls.get("files.upload", 0) // 2  # a resumable upload is two calls: start, then the bytes


def _files(base_url: str) -> list[Any]:
    client = genai_client(base_url)  # held while the pages are read: a client collected early closes its transport
    return list(client.files.list())


def test_a_failure_on_the_last_shard_deletes_what_was_staged_and_creates_nothing(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "data/in.jsonl", _records(35, bad_last=True))
    with start_in_thread(tmp_path / "emulator", job_seconds=0.0) as running:
        spec = write_spec(tmp_path, backend={"type": "gemini", "base_url": running.base_url},
                          jobs={"max_requests": 10})
        result = cli("run", str(spec))
        assert result.exit_code == 2, result.stderr
        calls, stats = _calls(running), running.engine.stats()
        assert _uploads(calls) == 3, "the three whole shards were uploaded while the fourth was made"
        assert calls["files.delete"] == 3
        assert _files(running.base_url) == []
        assert stats["creates_by_display_name"] == {} and stats["jobs"] == 0
    assert state_store(load_spec(spec)).load() is None


def test_every_unit_is_staged_once_while_preparing_and_the_jobs_run_from_it(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "data/in.jsonl", _records(35))
    with start_in_thread(tmp_path / "emulator", job_seconds=0.0) as running:
        spec = write_spec(tmp_path, backend={"type": "gemini", "base_url": running.base_url},
                          jobs={"max_requests": 10, "max_concurrent": 2, "poll_interval": "0.05s"})
        result = cli("run", str(spec))
        assert result.exit_code == 0, result.stderr
        assert _uploads(_calls(running)) == 4, "staged once each: the runner's stage step had nothing to do"
        files = {f.display_name: f.name for f in _files(running.base_url)}
    state = state_store(load_spec(spec)).load()
    assert state is not None
    assert all(job.status == COLLECTED and files[job.display_name] == job.file for _, job in state.jobs())
    assert [r["key"] for r in read_rows(tmp_path / "out/result.jsonl")] == [f"k{i:03d}" for i in range(35)]


def test_a_file_a_killed_run_staged_is_reused_and_a_stale_one_deleted(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "data/in.jsonl", _records(25))
    with start_in_thread(tmp_path / "emulator", job_seconds=0.0) as running:
        spec_path = write_spec(tmp_path, backend={"type": "gemini", "base_url": running.base_url},
                               jobs={"max_requests": 10, "poll_interval": "0.05s"})
        spec = load_spec(spec_path)
        # what a run killed while uploading leaves: the first unit, whole, and a file of another content
        planned = prepare(spec, tmp_path / "scratch", 1, None)
        first = planned.shards[0].jobs[0]
        client = genai_client(running.base_url)
        left = client.files.upload(file=str(tmp_path / "scratch" / first.input),
                                   config={"mime_type": "jsonl", "display_name": first.display_name})
        stale = client.files.upload(file=str(tmp_path / "data/in.jsonl"), config={
            "mime_type": "jsonl", "display_name": planned.shards[1].jobs[0].display_name[:-8] + "0badc0de"})
        before = _uploads(_calls(running))
        result = cli("run", str(spec_path))
        assert result.exit_code == 0, result.stderr
        assert _uploads(_calls(running)) - before == 2, "two of three units uploaded, one reused"
        names = {f.name for f in _files(running.base_url)}
    state = state_store(spec).load()
    assert state is not None and state.shards[0].jobs[0].file == left.name
    assert stale.name not in names and left.name in names


@pytest.mark.gcs
def test_on_vertex_a_failure_on_the_last_shard_deletes_the_staging_objects(tmp_path: Path,
                                                                            gcs_emulator: str) -> None:
    import gcsfs

    fs = gcsfs.GCSFileSystem(token="anon", project="p")
    bucket = "bf-" + uuid.uuid4().hex[:10]
    fs.mkdir(bucket)
    write_jsonl(tmp_path / "data/in.jsonl", _records(35, bad_last=True))
    with start_in_thread(tmp_path / "emulator", job_seconds=0.0) as running:
        backend = {"type": "vertex", "project": "p", "location": "us-central1", "staging": f"gs://{bucket}/staging",
                   "base_url": running.base_url}
        spec = write_spec(tmp_path, name="vx", backend=backend, jobs={"max_requests": 10})
        result = cli("run", str(spec))
        assert result.exit_code == 2, result.stderr
        assert running.engine.stats()["creates_by_display_name"] == {}
    fs.invalidate_cache()
    assert fs.find(f"{bucket}/staging") == [], json.dumps(fs.find(bucket))


@pytest.mark.gcs
def test_on_vertex_a_killed_runs_stale_staging_object_is_deleted_and_its_units_staged_again(
        tmp_path: Path, gcs_emulator: str) -> None:
    import gcsfs

    fs = gcsfs.GCSFileSystem(token="anon", project="p")
    bucket = "bf-" + uuid.uuid4().hex[:10]
    fs.mkdir(bucket)
    write_jsonl(tmp_path / "data/in.jsonl", _records(25))
    with start_in_thread(tmp_path / "emulator", job_seconds=0.0) as running:
        backend = {"type": "vertex", "project": "p", "location": "us-central1", "staging": f"gs://{bucket}/staging",
                   "base_url": running.base_url}
        spec_path = write_spec(tmp_path, name="vx", backend=backend, jobs={"max_requests": 10,
                                                                          "poll_interval": "0.05s"})
        planned = prepare(load_spec(spec_path), tmp_path / "scratch", 1, None)
        first = planned.shards[0].jobs[0].display_name
        # left by runs killed while uploading: an object under the first unit's name (its content is not read: it
        # is staged again), a stale one of this generation (the input changed since), one of another generation
        left = {first: b"old\n", first[:-8] + "0badc0de": b"stale\n", "batchflow-vx-g9-s00000-j1-12345678": b"x\n"}
        for name, data in left.items():
            fs.pipe(f"{bucket}/staging/vx/{name}/input.jsonl", data)
        result = cli("run", str(spec_path))
        assert result.exit_code == 0, result.stderr
    fs.invalidate_cache()
    assert fs.cat(f"{bucket}/staging/vx/{first}/input.jsonl").startswith(b'{"request"'), "staged again"
    assert not fs.exists(f"{bucket}/staging/vx/{first[:-8]}0badc0de/input.jsonl"), "the stale object is deleted"
    assert fs.exists(f"{bucket}/staging/vx/batchflow-vx-g9-s00000-j1-12345678/input.jsonl"), "another generation's"
    assert [r["status"] for r in read_rows(tmp_path / "out/result.jsonl")] == ["ok"] * 25
