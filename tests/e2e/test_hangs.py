"""A hung peer never hangs a run: behind a proxy that stops answering, `run` ends with exit 75 within its bounds,
in one line naming the call and the host, and the state is left for the next run."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from support.helpers import cli, cli_process, read_rows, write_jsonl, write_spec
from support.stall_proxy import stall_proxy

from batchflow.emulator import start_in_thread
from batchflow.errors import EXIT_NOT_FINISHED
from batchflow.libs.deadlines import ENV, deadlines


def _spec(tmp_path: Path, base_url: str, **overrides: Any) -> Path:
    write_jsonl(tmp_path / "data/in.jsonl", [{"id": f"r{i}", "text": f"t{i}"} for i in range(4)])
    return write_spec(tmp_path, backend={"type": "local", "base_url": base_url}, **overrides)


def _error_line(stderr: str) -> str:
    """The one line the CLI ends with (the lines before it are the run's JSON logs)."""
    lines = [line for line in stderr.splitlines() if line.strip() and not line.startswith("{")]
    assert len(lines) == 1, stderr
    return lines[0]


def test_a_batch_api_that_never_answers_ends_a_no_wait_run_with_75_naming_the_call(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, "0.5")
    with stall_proxy("127.0.0.1:9", mode="blackhole") as proxy:
        spec = _spec(tmp_path, proxy.url, retry={"call_attempts": 2, "backoff": {"initial": "0.1s"}})
        start = time.monotonic()
        result = cli("run", "--no-wait", str(spec))
        took = time.monotonic() - start
    assert result.exit_code == EXIT_NOT_FINISHED, result.stderr
    line = _error_line(result.stderr)
    assert f"no answer from {proxy.address} within 0.5 s" in line and line.startswith("timed out:")
    assert took < deadlines(2).worst_call * 4  # a few calls (staging, then the list before a create), then it ends


def test_a_hung_batch_api_ends_a_waiting_run_at_its_deadline(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, "0.3")
    with stall_proxy("127.0.0.1:9", mode="blackhole") as proxy:
        spec = _spec(tmp_path, proxy.url, retry={"call_attempts": 1, "backoff": {"initial": "0.1s", "max": "0.2s"}})
        start = time.monotonic()
        result = cli("run", "--deadline", "3s", str(spec))
        took = time.monotonic() - start
    assert result.exit_code == EXIT_NOT_FINISHED, result.stderr
    line = _error_line(result.stderr)
    assert line.startswith("deadline: the run's deadline (3 s, run --deadline) passed")
    assert "the state is saved, the next run picks up" in line
    assert took < 3 + deadlines(1).worst_call + 5


def test_a_run_after_the_peer_recovers_finishes_the_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         emulator_url: str) -> None:
    monkeypatch.setenv(ENV, "0.5")
    with stall_proxy(emulator_url, mode="blackhole") as proxy:
        spec = _spec(tmp_path, proxy.url, retry={"call_attempts": 1})
        assert cli("run", "--no-wait", str(spec)).exit_code == EXIT_NOT_FINISHED
        proxy.mode = "pass"
        again = cli("run", str(spec))
    assert again.exit_code == 0, again.stderr
    assert [r["status"] for r in read_rows(tmp_path / "out/result.jsonl")] == ["ok"] * 4


@pytest.mark.parametrize("option", ["soon", "-1s"])
def test_a_deadline_that_is_not_a_duration_is_a_usage_error(tmp_path: Path, option: str) -> None:
    spec = _spec(tmp_path, "http://127.0.0.1:9")
    result = cli("run", "--deadline", option, str(spec))
    assert result.exit_code == 2 and "--deadline" in result.stderr


@pytest.mark.gcs
@pytest.mark.parametrize("mode", ["blackhole", "stall_upload", "stall_body"])
def test_a_gcs_state_behind_a_stalled_peer_ends_the_run_with_75_naming_the_call(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gcs_emulator: str, bucket: str, emulator_url: str,
        mode: str) -> None:
    monkeypatch.setenv(ENV, "0.5")
    with stall_proxy(gcs_emulator, mode=mode, after=200) as proxy:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
        spec = _spec(tmp_path, emulator_url, state={"dir": f"gs://{bucket}/state"},
                     retry={"call_attempts": 1})
        start = time.monotonic()
        result = cli("run", "--no-wait", str(spec))
        took = time.monotonic() - start
    assert result.exit_code == EXIT_NOT_FINISHED, result.stderr
    line = _error_line(result.stderr)
    assert f"no answer from {proxy.address}" in line, line
    assert took < 30


@pytest.mark.bigquery
def test_bigquery_reads_stalled_end_the_run_with_75_naming_the_call(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bigquery_emulator: str, emulator_url: str) -> None:
    monkeypatch.setenv(ENV, "0.5")
    with stall_proxy(bigquery_emulator, mode="stall_body", after=100) as proxy:
        monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", proxy.url)
        spec = _spec(tmp_path, emulator_url, source={"type": "bigquery", "table": "test.ds.items"})
        start = time.monotonic()
        result = cli("run", "--no-wait", str(spec))
        took = time.monotonic() - start
    assert result.exit_code == EXIT_NOT_FINISHED, result.stderr
    assert f"no answer from {proxy.address}" in _error_line(result.stderr)
    assert took < 60


@pytest.mark.parametrize(("route", "call"), [("create", "create"), ("list", "list"), ("batches.get", "get"),
                                             ("models.get", "models.get")])
def test_a_gemini_batch_api_whose_route_hangs_ends_a_no_wait_run_with_75_naming_the_call(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, route: str, call: str) -> None:
    monkeypatch.setenv(ENV, "0.5")
    plan = tmp_path / "hangs.yaml"
    plan.write_text(f"hangs: {{{route}: {{kind: hang, rate: 1}}}}\n", encoding="utf-8")
    with start_in_thread(tmp_path / "emu", job_seconds=30, faults=plan) as emulator:
        write_jsonl(tmp_path / "data/in.jsonl", [{"id": f"r{i}", "text": f"t{i}"} for i in range(4)])
        spec = write_spec(tmp_path, backend={"type": "gemini", "base_url": emulator.base_url},
                          retry={"call_attempts": 2, "backoff": {"initial": "0.1s"}})
        start = time.monotonic()
        result = cli("run", "--no-wait", str(spec))
        took = time.monotonic() - start
        hung = emulator.engine.faults.counters().get("http_hang", 0)
    assert result.exit_code == EXIT_NOT_FINISHED, result.stderr
    line = _error_line(result.stderr)
    host = emulator.base_url.removeprefix("http://")
    assert line.startswith(f"timed out: {call}") and f"no answer from {host} within 0.5 s" in line, line
    assert hung >= 1
    assert took < deadlines(2).worst_call * 4


def test_a_create_whose_answer_stalls_is_adopted_by_the_next_run_never_created_twice(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first create takes effect at the service but its answer stops half-way: the run ends with 75, and the
    next one finds the job by its display name instead of paying for it again."""
    monkeypatch.setenv(ENV, "0.5")
    plan = tmp_path / "hangs.yaml"
    plan.write_text("hangs: {create: {kind: stall_body, calls: [1]}}\n", encoding="utf-8")
    with start_in_thread(tmp_path / "emu", job_seconds=0.2, faults=plan) as emulator:
        write_jsonl(tmp_path / "data/in.jsonl", [{"id": f"r{i}", "text": f"t{i}"} for i in range(4)])
        spec = write_spec(tmp_path, backend={"type": "gemini", "base_url": emulator.base_url},
                          retry={"call_attempts": 2, "backoff": {"initial": "0.1s"}})
        first = cli("run", "--no-wait", str(spec))
        assert first.exit_code == EXIT_NOT_FINISHED, first.stderr
        assert _error_line(first.stderr).startswith("timed out: create ")
        again = cli("run", str(spec))
        stats = emulator.engine.stats()
    assert again.exit_code == 0, again.stderr
    assert list(stats["creates_by_display_name"].values()) == [1], stats
    assert stats["calls_by_endpoint"]["batches.create"] == 1  # the stalled one: the next run adopted its job
    assert [r["status"] for r in read_rows(tmp_path / "out/result.jsonl")] == ["ok"] * 4


@pytest.mark.gcs
def test_a_vertex_staging_upload_stalled_half_way_ends_the_run_with_75_and_a_later_run_finishes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gcs_emulator: str, bucket: str) -> None:
    """The upload of a unit's input stops being read half-way (the listing before it passes): the run stops with
    exit 75 at the stalled call, naming it and GCS's host, without a second wait at the stage step; once GCS
    answers again, the next run stages, runs and merges every record, each job created once."""
    monkeypatch.setenv(ENV, "0.5")
    records = [{"id": f"r{i}", "text": f"t{i} " + "x" * (100 << 10)} for i in range(4)]  # 400 KB to stage
    write_jsonl(tmp_path / "data/in.jsonl", records)
    with stall_proxy(gcs_emulator, mode="stall_upload", after=64 << 10) as proxy, \
            start_in_thread(tmp_path / "emu", job_seconds=0.0) as emulator:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
        backend = {"type": "vertex", "project": "p", "location": "us-central1", "staging": f"gs://{bucket}/staging",
                   "base_url": emulator.base_url}
        spec = write_spec(tmp_path, name="vx", backend=backend, retry={"call_attempts": 1})
        start = time.monotonic()
        result = cli("run", "--no-wait", "--deadline", "40s", str(spec))
        took = time.monotonic() - start
        assert result.exit_code == EXIT_NOT_FINISHED, result.stderr
        line = _error_line(result.stderr)
        assert line.startswith("timed out: stage gs://") and f"no answer from {proxy.address}" in line, line
        assert took < 40, took
        proxy.mode = "pass"
        proxy.thaw()  # the stalled connections dropped: GCS answers again
        again = cli("run", str(spec))
        stats = emulator.engine.stats()
    assert again.exit_code == 0, again.stderr
    assert list(stats["creates_by_display_name"].values()) == [1], stats
    assert [r["key"] for r in read_rows(tmp_path / "out/result.jsonl")] == [f"r{i}" for i in range(4)]
    assert {r["status"] for r in read_rows(tmp_path / "out/result.jsonl")} == {"ok"}


@pytest.mark.gcs
@pytest.mark.parametrize("attempts", [1, 3])
def test_a_gcs_state_that_never_answers_is_tried_as_often_as_retry_call_attempts_says(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gcs_emulator: str, bucket: str, attempts: int) -> None:
    """Each attempt is a connection of its own at the proxy (a timed-out one is dropped), and the run's first
    call to GCS is the lease's: the spec's call policy, not a constant of the gs:// state's, says how often."""
    monkeypatch.setenv(ENV, "0.5")
    with stall_proxy(gcs_emulator, mode="blackhole") as proxy:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
        spec = _spec(tmp_path, "http://127.0.0.1:9", state={"dir": f"gs://{bucket}/state"},
                     retry={"call_attempts": attempts})
        result = cli("run", "--no-wait", str(spec))
        tried = proxy.connections
    assert result.exit_code == EXIT_NOT_FINISHED, result.stderr
    assert _error_line(result.stderr).startswith("timed out: take the lease (gs://"), result.stderr
    assert tried == attempts


@pytest.mark.gcs
def test_a_gcs_state_frozen_at_the_deadline_ends_the_run_within_its_deadline_plus_one_call_bound(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gcs_emulator: str, bucket: str) -> None:
    """GCS stops answering while the run waits on its jobs, just before its deadline: the run ends with 75 within
    the deadline plus one call's worst case (operations.md, "Deadlines"), the lease left to run out on its own
    rather than waited on again."""
    monkeypatch.setenv(ENV, "0.5")
    with stall_proxy(gcs_emulator) as proxy, start_in_thread(tmp_path / "emu", job_seconds=30) as emulator:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
        spec = _spec(tmp_path, emulator.base_url, state={"dir": f"gs://{bucket}/state", "lease": "30s"},
                     jobs={"poll_interval": "0.2s"}, retry={"call_attempts": 1})
        threading.Timer(2.5, proxy.freeze).start()
        start = time.monotonic()
        result = cli("run", "--deadline", "3s", str(spec))
        took = time.monotonic() - start
    assert result.exit_code == EXIT_NOT_FINISHED, result.stderr
    assert took < 3 + deadlines(1).worst_call + 0.5, took  # the half second: the CLI's own start and end


@pytest.mark.gcs
def test_a_gs_source_whose_peer_trickles_ends_the_run_with_75_naming_the_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gcs_emulator: str, bucket: str, fs: Any) -> None:
    """GCS answers the read of the source a byte every 0.2 s, never silent for the 0.5 s a read may wait without a
    byte: the read as a whole is bounded by its size (a call's wait plus 256 KiB a second), not per byte, so the
    run ends with 75 naming it, where the read would otherwise go on for hours (200 KB at 5 bytes a second)."""
    monkeypatch.setenv(ENV, "0.5")
    lines = [json.dumps({"id": f"r{i}", "text": "x" * 200}) for i in range(1000)]
    fs.pipe(f"{bucket}/in.jsonl", "\n".join(lines).encode())
    with stall_proxy(gcs_emulator, mode="trickle", after=4096, every=0.2) as proxy:
        spec = write_spec(tmp_path, backend={"type": "local", "base_url": "http://127.0.0.1:9"},
                          source={"type": "files", "path": f"gs://{bucket}/in.jsonl"}, retry={"call_attempts": 1})
        env = {**os.environ, "STORAGE_EMULATOR_HOST": proxy.url, "GEMINI_API_KEY": "k"}
        start = time.monotonic()
        result = cli_process("run", "--no-wait", str(spec), env=env, timeout=60)
        took = time.monotonic() - start
    assert result.returncode == EXIT_NOT_FINISHED, result.stderr
    line = _error_line(result.stderr)
    assert line.startswith(f"timed out: read gs://{bucket}/in.jsonl") and f"no answer from {proxy.address}" in line
    assert took < 30, took
