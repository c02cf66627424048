"""The fault plan on the emulator's Vertex surface: stuck and stalled jobs at their time limits, CANCELLING,
late, deleted and partial predictions, degraded lines and the echo's shape; driven by google-genai (vertex mode)
and gcsfs against a real GCS emulator."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import google.oauth2.credentials
import pytest
import yaml
from google import genai
from google.genai import types
from support.emulator_helpers import wait_done

from batchflow.emulator import RunningEmulator, start_in_thread

pytestmark = pytest.mark.gcs

MODEL = "gemini-2.5-flash"
State = types.JobState


@contextmanager
def faulty(tmp_path: Path, plan: dict[str, Any]) -> Iterator[tuple[RunningEmulator, genai.Client]]:
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(plan), encoding="utf-8")
    with start_in_thread(tmp_path / "emu", faults=path) as emu:
        client = genai.Client(vertexai=True, project="proj", location="us-central1",
                              credentials=google.oauth2.credentials.Credentials(token="fake"),
                              http_options=types.HttpOptions(base_url=emu.base_url))
        with client:
            yield emu, client


def _src(fs: Any, bucket: str, n: int = 40) -> str:
    lines = [{"request": {"contents": [{"role": "user", "parts": [{"text": f"item {i}"}]}],
                          "labels": {"k": f"v{i:04d}"}}} for i in range(n)]
    fs.pipe(f"{bucket}/in.jsonl", "".join(json.dumps(x) + "\n" for x in lines).encode())
    return f"gs://{bucket}/in.jsonl"


def _create(client: genai.Client, src: str, dest: str, name: str = "vx") -> str:
    job = client.batches.create(model=MODEL, src=src, config=types.CreateBatchJobConfig(dest=dest, display_name=name))
    assert job.name
    return job.name


def _predictions(fs: Any, job: types.BatchJob) -> list[dict[str, Any]]:
    assert job.output_info and job.output_info.gcs_output_directory
    fs.invalidate_cache()
    files = fs.glob(job.output_info.gcs_output_directory.removeprefix("gs://") + "/predictions*.jsonl")
    return [json.loads(x) for f in files for x in fs.cat(f).decode().splitlines()]


def test_a_stuck_job_is_pending_then_expired_and_a_stalled_one_cancelled_keeping_its_output(
        tmp_path: Path, fs: Any, bucket: str) -> None:
    src = _src(fs, bucket, 10)
    with faulty(tmp_path, {"jobs": {"stuck": 1, "stall": 1, "expire_after": "0.8s"}}) as (emu, client):
        stuck, stalled = _create(client, src, f"gs://{bucket}/o1", "a"), _create(client, src, f"gs://{bucket}/o2", "b")
        assert client.batches.get(name=stuck).state == State.JOB_STATE_PENDING
        assert client.batches.get(name=stalled).state == State.JOB_STATE_RUNNING
        expired, cancelled = wait_done(client, stuck), wait_done(client, stalled)
        faults = emu.engine.stats()["faults"]
    assert expired.state == State.JOB_STATE_EXPIRED and expired.start_time is None
    assert cancelled.state == State.JOB_STATE_CANCELLED and len(_predictions(fs, cancelled)) == 10
    assert faults == {"job_stuck": 1, "job_stalled": 1, "job_time_limit_expired": 1, "job_time_limit_cancelled": 1}


def test_a_cancel_passes_through_cancelling_and_may_end_succeeded(tmp_path: Path, fs: Any, bucket: str) -> None:
    src = _src(fs, bucket, 10)
    plan = {"jobs": {"stuck": True, "cancelling_succeeds": 1, "cancelling_seconds": "0.3s"}}
    with faulty(tmp_path, plan) as (_, client):
        names = [_create(client, src, f"gs://{bucket}/o{i}", f"j{i}") for i in range(2)]
        for name in names:
            client.batches.cancel(name=name)
            assert client.batches.get(name=name).state == State.JOB_STATE_CANCELLING
        listed = list(client.batches.list(config=types.ListBatchJobsConfig(filter='state="JOB_STATE_CANCELLING"')))
        assert sorted(j.name or "" for j in listed) == sorted(names)
        succeeded, cancelled = (wait_done(client, name) for name in names)
    assert succeeded.state == State.JOB_STATE_SUCCEEDED and len(_predictions(fs, succeeded)) == 10
    assert cancelled.state == State.JOB_STATE_CANCELLED and not fs.glob(f"{bucket}/o1/**/predictions*.jsonl")


def test_late_predictions_appear_late_and_gone_ones_are_deleted(tmp_path: Path, fs: Any, bucket: str) -> None:
    src = _src(fs, bucket, 10)
    plan = {"jobs": {"late_output": 1, "output_gone": True}, "output": {"late_seconds": "0.5s", "retention": "1s"}}
    with faulty(tmp_path, plan) as (emu, client):
        late = wait_done(client, _create(client, src, f"gs://{bucket}/late", "late"))
        gone = wait_done(client, _create(client, src, f"gs://{bucket}/gone", "gone"))
        assert late.state == gone.state == State.JOB_STATE_SUCCEEDED
        assert _predictions(fs, late) == [] and len(_predictions(fs, gone)) == 10
        time.sleep(0.7)
        assert len(_predictions(fs, late)) == 10
        time.sleep(0.6)
        assert _predictions(fs, gone) == [] and len(_predictions(fs, late)) == 10  # late's time runs from it came
        time.sleep(0.5)
        assert _predictions(fs, late) == []
        assert emu.engine.stats()["faults"] == {"job_late_output": 1, "job_output_gone": 2}


def test_a_cancelled_job_delivers_its_finished_predictions(tmp_path: Path, fs: Any, bucket: str) -> None:
    src = _src(fs, bucket, 200)
    with faulty(tmp_path, {"seed": 2, "jobs": {"stall": True, "cancel_delivers": True}}) as (_, client):
        name = _create(client, src, f"gs://{bucket}/out", "cut")
        assert client.batches.get(name=name).state == State.JOB_STATE_RUNNING  # stalled past its due time
        client.batches.cancel(name=name)
        job = wait_done(client, name)
    out = _predictions(fs, job)
    assert job.state == State.JOB_STATE_CANCELLED and job.completion_stats
    assert 60 < len(out) < 140 and job.completion_stats.successful_count == len(out)
    assert len({x["request"]["labels"]["k"] for x in out}) == len(out)


def test_lines_are_blocked_or_cut_and_the_echo_is_reserialised_without_labels(
        tmp_path: Path, fs: Any, bucket: str) -> None:
    src = _src(fs, bucket, 200)
    plan = {"seed": 1, "requests": {"blocked": 0.1, "max_tokens": 0.1}, "output": {"drop_labels": True}}
    with faulty(tmp_path, plan) as (_, client):
        out = _predictions(fs, wait_done(client, _create(client, src, f"gs://{bucket}/out")))
    assert len(out) == 200 and all(x["status"] == "" for x in out)
    assert all(x["request"]["contents"][0] == {"parts": [{"file_data": None, "text": x["request"]["contents"][0][
        "parts"][0]["text"]}], "role": "user"} and "labels" not in x["request"] for x in out)
    responses = [types.GenerateContentResponse.model_validate(x["response"]) for x in out]
    blocked = [r for r in responses if r.prompt_feedback and r.prompt_feedback.block_reason == "SAFETY"]
    cut = [r for r in responses if r.candidates and r.candidates[0].finish_reason == "MAX_TOKENS"]
    assert 5 < len(blocked) < 40 and 5 < len(cut) < 40 and all(r.candidates is None for r in blocked)


def test_the_echo_is_as_sent_when_the_plan_says_so(tmp_path: Path, fs: Any, bucket: str) -> None:
    src = _src(fs, bucket, 5)
    with faulty(tmp_path, {"output": {"reserialise_echo": False}}) as (_, client):
        out = _predictions(fs, wait_done(client, _create(client, src, f"gs://{bucket}/out")))
    assert sorted(json.dumps(x["request"]) for x in out) == sorted(
        json.dumps({"contents": [{"role": "user", "parts": [{"text": f"item {i}"}]}], "labels": {"k": f"v{i:04d}"}})
        for i in range(5))
