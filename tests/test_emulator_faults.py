"""Seeded fault plans, driven by the real google-genai SDK against the emulator in a thread."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from emulator_helpers import wait_done
from google import genai
from google.genai import errors, types
from helpers import cli

from batchflow.emulator import RunningEmulator, start_in_thread
from batchflow.emulator.faults import FaultPlanError, load_faults

MODEL = "gemini-2.5-flash"
STATUS = {429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}


@contextmanager
def faulty(tmp_path: Path, plan: dict[str, Any], name: str = "emu") -> Iterator[tuple[RunningEmulator, genai.Client]]:
    """An emulator serving `plan` (written as YAML, loaded as `--faults` loads it) and an SDK client of it."""
    path = tmp_path / f"{name}.faults.yaml"
    path.write_text(yaml.safe_dump(plan), encoding="utf-8")
    with start_in_thread(tmp_path / name, faults=path) as emulator:
        client = genai.Client(api_key="test", http_options=types.HttpOptions(base_url=emulator.base_url))
        with client:
            yield emulator, client


def _outcome(call: Any) -> int | None:
    """None when the call succeeds, else the HTTP code of the APIError (whose shape is checked)."""
    try:
        call()
    except errors.APIError as exc:
        assert exc.status == STATUS[exc.code] and exc.message
        return exc.code
    return None


def _upload(client: genai.Client, tmp_path: Path, keys: list[str]) -> str:
    path = tmp_path / f"in-{time.monotonic_ns()}.jsonl"
    lines = [{"key": k, "request": {"contents": [{"role": "user", "parts": [{"text": k}]}]}} for k in keys]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return str(client.files.upload(file=str(path), config=types.UploadFileConfig(mime_type="jsonl")).name)


def _inline_job(client: genai.Client, display_name: str) -> str:
    src: Any = [{"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}]
    return str(client.batches.create(model=MODEL, src=src, config={"display_name": display_name}).name)


def _lines(client: genai.Client, job: types.BatchJob) -> list[dict[str, Any]]:
    assert job.dest is not None and job.dest.file_name
    return [json.loads(line) for line in client.files.download(file=job.dest.file_name).decode().splitlines()]


def test_http_faults_honour_the_rate_with_googles_error_shape_and_are_counted(tmp_path: Path) -> None:
    with faulty(tmp_path, {"seed": 1, "http": {"*": {"rate": 0.3, "codes": [429, 500, 503]}}}) as (emu, client):
        seen = Counter(_outcome(lambda: list(client.batches.list())) for _ in range(400))
        stats = emu.engine.stats()
    assert 0.24 < (400 - seen[None]) / 400 < 0.36
    assert {429, 500, 503} <= set(seen)
    assert stats["faults"] == {f"http_{code}": n for code, n in seen.items() if code is not None}


def test_the_same_seed_gives_the_same_sequence_and_another_seed_another(tmp_path: Path) -> None:
    def sequence(seed: int, name: str) -> list[int | None]:
        with faulty(tmp_path, {"seed": seed, "http": {"list": {"rate": 0.5}}}, name) as (_, client):
            return [_outcome(lambda: client.batches.list()) for _ in range(60)]

    first = sequence(7, "a")
    assert sequence(7, "b") == first
    assert sequence(8, "c") != first
    assert 10 < sum(code is not None for code in first) < 50


def test_the_most_specific_rule_wins_and_other_families_are_untouched(tmp_path: Path) -> None:
    plan = {"http": {"*": {"rate": 1, "codes": [500]}, "list": {"rate": 0}, "files.list": {"rate": 1, "codes": [429]}}}
    with faulty(tmp_path, plan) as (_, client):
        assert _outcome(lambda: client.batches.list()) is None
        assert _outcome(lambda: client.files.list()) == 429
        assert _outcome(lambda: client.batches.get(name="batches/x")) == 500


def test_a_create_failing_after_it_happened_leaves_a_job_the_client_was_told_failed(tmp_path: Path) -> None:
    plan = {"http": {"create": {"rate": 1, "codes": [503], "after": True}}}
    with faulty(tmp_path, plan) as (emu, client):
        for i in range(3):
            assert _outcome(lambda i=i: _inline_job(client, f"after-{i}")) == 503
        listed = sorted(j.display_name or "" for j in client.batches.list())
        stats = emu.engine.stats()
    assert listed == ["after-0", "after-1", "after-2"]
    assert stats["creates_by_display_name"] == {"after-0": 1, "after-1": 1, "after-2": 1}
    assert stats["faults"] == {"http_503_after": 3}


def test_a_create_failing_before_creates_nothing(tmp_path: Path) -> None:
    with faulty(tmp_path, {"http": {"create": {"rate": 1, "codes": [429]}}}) as (emu, client):
        assert _outcome(lambda: _inline_job(client, "before")) == 429
        assert list(client.batches.list()) == []
        assert emu.engine.stats()["creates_by_display_name"] == {}


def test_a_faulted_upload_raises_at_once_instead_of_the_sdks_chunk_retries(tmp_path: Path) -> None:
    with faulty(tmp_path, {"http": {"upload": {"rate": 1, "codes": [503], "after": True}}}) as (emu, client):
        started = time.monotonic()
        assert _outcome(lambda: _upload(client, tmp_path, ["a"])) == 503
        assert time.monotonic() - started < 0.9  # the SDK sleeps 1 s before re-sending a chunk
        assert emu.engine.stats()["calls_by_endpoint"]["files.upload"] == 1  # the start failed: no chunk sent


def test_job_faults_fail_expire_and_stall_reproducibly_and_a_stalled_job_can_be_cancelled(tmp_path: Path) -> None:
    def outcomes(name: str) -> dict[str, dict[str, Any]]:
        """display name -> the raw batch resource (the SDK drops the Developer API's `error`)."""
        with faulty(tmp_path, {"seed": 3, "jobs": {"fail_first_attempt": 0.4, "expire": 1}}, name) as (_, client):
            names = {f"shard-{i}": _inline_job(client, f"shard-{i}") for i in range(16)}
            for job in names.values():
                wait_done(client, job)
            return {d: json.loads(client._api_client.request("get", job, {}).body) for d, job in names.items()}

    first = outcomes("a")
    states = Counter(op["metadata"]["state"] for op in first.values())
    assert states["BATCH_STATE_EXPIRED"] == 1 and 2 <= states["BATCH_STATE_FAILED"] <= 12
    assert states["BATCH_STATE_SUCCEEDED"] == 16 - 1 - states["BATCH_STATE_FAILED"]
    for op in first.values():
        failed = op["metadata"]["state"] != "BATCH_STATE_SUCCEEDED"
        assert op["done"] and (op["error"]["message"] if failed else "output" in op["metadata"])
        assert failed != ("output" in op["metadata"])  # a failed or expired job has no results at all
    second = outcomes("b")
    assert {d: op["metadata"]["state"] for d, op in second.items()} == {
        d: op["metadata"]["state"] for d, op in first.items()}

    with faulty(tmp_path, {"jobs": {"stall": 1}}, "stall") as (emu, client):
        stalled, fine = _inline_job(client, "stalled"), _inline_job(client, "fine")
        # a count takes the first jobs whose outcome is decided: this get decides `stalled` first
        assert client.batches.get(name=stalled).state == types.JobState.JOB_STATE_RUNNING
        assert wait_done(client, fine).state == types.JobState.JOB_STATE_SUCCEEDED
        assert client.batches.get(name=stalled).state == types.JobState.JOB_STATE_RUNNING
        client.batches.cancel(name=stalled)
        assert client.batches.get(name=stalled).state == types.JobState.JOB_STATE_CANCELLED
        assert emu.engine.stats()["faults"] == {"job_stalled": 1}


def test_request_line_faults_are_drawn_per_key_and_job_so_a_retry_in_another_job_can_succeed(tmp_path: Path) -> None:
    keys = [f"k{i:04d}" for i in range(400)]
    plan = {"seed": 5, "requests": {"fail": 0.1, "codes": [500, 503, 429]}}
    with faulty(tmp_path, plan) as (emu, client):
        file = _upload(client, tmp_path, keys)

        def failed(display_name: str) -> set[str]:
            job = client.batches.create(model=MODEL, src=file, config={"display_name": display_name})
            lines = _lines(client, wait_done(client, str(job.name)))
            assert [line["key"] for line in lines] == keys
            for line in lines:
                if "error" in line:
                    assert line["error"]["status"] == STATUS[line["error"]["code"]]
            return {line["key"] for line in lines if "error" in line}

        first, again, other = failed("job-a"), failed("job-a"), failed("job-b")
        counted = sum(emu.engine.stats()["faults"].values())
    assert 20 <= len(first) <= 60
    assert again == first  # same key, same job name: the same draw
    assert other != first and len(other & first) < len(first) // 2  # a retry in another job draws afresh
    assert counted == len(first) + len(again) + len(other)


def test_output_lines_can_be_dropped_or_written_twice(tmp_path: Path) -> None:
    keys = [f"k{i:04d}" for i in range(400)]
    with faulty(tmp_path, {"output": {"drop": 0.1, "duplicate": 0.1}}) as (emu, client):
        job = client.batches.create(model=MODEL, src=_upload(client, tmp_path, keys), config={"display_name": "d"})
        seen = Counter(line["key"] for line in _lines(client, wait_done(client, str(job.name))))
        faults = emu.engine.stats()["faults"]
    dropped, doubled = set(keys) - set(seen), {k for k, n in seen.items() if n == 2}
    assert 20 <= len(dropped) <= 60 and 20 <= len(doubled) <= 60 and max(seen.values()) == 2
    assert faults == {"line_dropped": len(dropped), "line_duplicated": len(doubled)}


@pytest.mark.parametrize(("text", "message"), [
    ("http: {create: {rate: 2}}", "http.create.rate: must be a number between 0 and 1, got 2"),
    ("http: {create: {rate: 0.1, codes: [418]}}", "http.create.codes: 418 is not one of"),
    ("http: {create: {codes: [500]}}", "http.create: rate is required"),
    ("jobs: {explode: 1}", "jobs.explode: unknown key"),
    ("jobs: {fail: 0.1, fail_first_attempt: 0.2}", "given twice"),
    ("seed: x", "seed: must be an integer"),
    ("requests: [1]", "requests: must be a mapping"),
    ("seed: [1", "f.yaml:2:1: not YAML or JSON"),
])
def test_a_bad_plan_is_one_line_naming_the_file_and_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "f.yaml"
    path.write_text(text + "\n", encoding="utf-8")
    with pytest.raises(FaultPlanError, match=r"f\.yaml") as caught:
        load_faults(path)
    assert message in str(caught.value) and "\n" not in str(caught.value)
    result = cli("emulator", "--port", "0", "--data-dir", str(tmp_path / "emu"), "--faults", str(path))
    assert result.exit_code == 2 and message in result.stderr


def test_a_json_plan_loads_too(tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    path.write_text(json.dumps({"seed": 2, "http": {"get": {"rate": 0.5, "codes": [503]}}}), encoding="utf-8")
    with start_in_thread(tmp_path / "emu", faults=path) as emu:
        drawn = [emu.engine.faults.request_fault("batches.get") for _ in range(40)]
        assert {f.error.code for f in drawn if f} == {503} and 5 < drawn.count(None) < 35
        assert emu.engine.faults.request_fault("emulator.stats") is None
