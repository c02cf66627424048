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
from google import genai
from google.genai import errors, types
from support.emulator_helpers import wait_done
from support.helpers import cli

from batchflow.emulator import RunningEmulator, start_in_thread
from batchflow.emulator.faults.plan import FaultPlanError, load_faults

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
    ("jobs: {expire_after: soon}", "jobs.expire_after: must be a duration"),
    ("jobs: {stuck: -1}", "jobs.stuck: must be a number between 0 and 1"),
    ("output: {late_seconds: [1]}", "output.late_seconds: must be a duration"),
    ("output: {drop_labels: 1}", "output.drop_labels: must be true or false"),
    ("requests: {blocked: 2}", "requests.blocked: must be a number between 0 and 1"),
    ("quota: {enqueued_tokens: 0}", "quota.enqueued_tokens: must be a positive integer"),
    ("quota: {tokens: 5}", "quota.tokens: unknown key"),
    ("hangs: {get: {kind: sleep, rate: 1}}", "hangs.get.kind: must be one of hang, stall_body, stall_upload"),
    ("hangs: {get: {kind: hang}}", "hangs.get: rate or calls is required"),
    ("hangs: {get: {kind: hang, calls: [0]}}", "hangs.get.calls: must be a list of call numbers from 1"),
    ("hangs: {get: {kind: hang, rate: 2}}", "hangs.get.rate: must be a number between 0 and 1"),
    ("hangs: {get: {kind: hang, rate: 1, after: 3}}", "hangs.get.after: unknown key"),
    ("access: {unreadable_bucket: [b]}", "access.unreadable_bucket: unknown key (expected one of unreadable_buckets)"),
    ("access: {unreadable_buckets: b}", "access.unreadable_buckets: must be a list of bucket names, got 'b'"),
    ("access: {unreadable_buckets: ['gs://b/x']}", "access.unreadable_buckets: must be a list of bucket names, got "
     "['gs://b/x'] (a bucket's name, not a URI: 'b')"),
    ("access: {unreadable_buckets: [b, 3]}", "access.unreadable_buckets: must be a list of bucket names, got ['b', 3]"),
    ("access: [b]", "access: must be a mapping, got list"),
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


def _raw_job(client: genai.Client, name: str) -> dict[str, Any]:
    """The raw batch resource (the SDK drops the Developer API's `error` and `batchStats`)."""
    return dict(json.loads(client._api_client.request("get", name, {}).body))


def _download_code(client: genai.Client, file_name: str) -> int | None:
    try:
        client.files.download(file=file_name)
    except errors.ClientError as exc:
        assert exc.status == "NOT_FOUND"
        return exc.code
    return None


def test_a_stuck_job_stays_pending_until_cancelled_or_expired_after_the_limit(tmp_path: Path) -> None:
    with faulty(tmp_path, {"jobs": {"stuck": 2, "expire_after": "0.6s"}}) as (emu, client):
        stuck, cancelled, fine = (_inline_job(client, n) for n in ("stuck", "cancelled", "fine"))
        assert wait_done(client, fine).state == types.JobState.JOB_STATE_SUCCEEDED
        assert client.batches.get(name=stuck).state == types.JobState.JOB_STATE_PENDING
        client.batches.cancel(name=cancelled)
        assert client.batches.get(name=cancelled).state == types.JobState.JOB_STATE_CANCELLED
        time.sleep(0.4)
        assert client.batches.get(name=stuck).state == types.JobState.JOB_STATE_PENDING
        expired = wait_done(client, stuck)
        op = _raw_job(client, stuck)
        faults = emu.engine.stats()["faults"]
    assert expired.state == types.JobState.JOB_STATE_EXPIRED and "output" not in op["metadata"] and op["error"]
    assert faults == {"job_stuck": 2, "job_time_limit_expired": 1}


def test_a_stalled_job_expires_at_the_time_limit_too(tmp_path: Path) -> None:
    with faulty(tmp_path, {"jobs": {"stall": 1, "expire_after": "0.5s"}}) as (emu, client):
        name = _inline_job(client, "stalled")
        assert client.batches.get(name=name).state == types.JobState.JOB_STATE_RUNNING
        assert wait_done(client, name).state == types.JobState.JOB_STATE_EXPIRED
        assert emu.engine.stats()["faults"] == {"job_stalled": 1, "job_time_limit_expired": 1}


def test_late_output_is_404_until_late_seconds_after_the_end_then_readable(tmp_path: Path) -> None:
    plan = {"jobs": {"late_output": True}, "output": {"late_seconds": "0.6s"}}
    with faulty(tmp_path, plan) as (emu, client):
        job = wait_done(client, str(client.batches.create(model=MODEL, src=_upload(client, tmp_path, ["a", "b"])).name))
        inline = _inline_job(client, "inline")
        wait_done(client, inline)
        assert job.state == types.JobState.JOB_STATE_SUCCEEDED and job.dest and job.dest.file_name
        assert _download_code(client, job.dest.file_name) == 404
        assert "output" not in _raw_job(client, inline)["metadata"]
        time.sleep(0.7)
        assert [line["key"] for line in _lines(client, job)] == ["a", "b"]
        assert _raw_job(client, inline)["metadata"]["output"]["inlinedResponses"]["inlinedResponses"]
        assert emu.engine.stats()["faults"] == {"job_late_output": 2}


def test_gone_output_is_deleted_retention_after_the_end(tmp_path: Path) -> None:
    with faulty(tmp_path, {"jobs": {"output_gone": 1}, "output": {"retention": "0.5s"}}) as (_, client):
        job = wait_done(client, str(client.batches.create(model=MODEL, src=_upload(client, tmp_path, ["a"])).name))
        kept = wait_done(client, str(client.batches.create(model=MODEL, src=_upload(client, tmp_path, ["b"])).name))
        assert job.dest and job.dest.file_name and [line["key"] for line in _lines(client, job)] == ["a"]
        time.sleep(0.6)
        assert _download_code(client, job.dest.file_name) == 404
        assert _raw_job(client, str(job.name))["metadata"]["output"]["responsesFile"] == job.dest.file_name
        assert [line["key"] for line in _lines(client, kept)] == ["b"]


def test_a_cancelled_job_delivers_the_lines_it_had_finished(tmp_path: Path) -> None:
    keys = [f"k{i:03d}" for i in range(200)]
    plan = {"seed": 4, "jobs": {"stall": True, "cancel_delivers": True}}
    with faulty(tmp_path, plan) as (emu, client):
        file = _upload(client, tmp_path, keys)
        name = str(client.batches.create(model=MODEL, src=file, config={"display_name": "cut-short"}).name)
        inline = _inline_job(client, "inline")
        for job in (name, inline):
            assert client.batches.get(name=job).state == types.JobState.JOB_STATE_RUNNING  # stalled
            client.batches.cancel(name=job)
        job = client.batches.get(name=name)
        delivered = [line["key"] for line in _lines(client, job)]
        op = _raw_job(client, name)
        inline_op = _raw_job(client, inline)
        faults = emu.engine.stats()["faults"]
    assert job.state == types.JobState.JOB_STATE_CANCELLED
    assert 60 < len(delivered) < 140 and delivered == sorted(delivered)  # a stalled job finished half its lines
    assert op["metadata"]["batchStats"]["successfulRequestCount"] == str(len(delivered))
    assert inline_op["metadata"]["state"] == "BATCH_STATE_CANCELLED"
    assert faults["job_cancel_delivers"] == 2 and faults["job_stalled"] == 2


def test_a_cancel_without_cancel_delivers_returns_nothing_and_a_stuck_job_has_nothing_to_deliver(
        tmp_path: Path) -> None:
    with faulty(tmp_path, {"jobs": {"stuck": 1, "stall": 1, "cancel_delivers": 1}}) as (_, client):
        stuck = _inline_job(client, "stuck-and-delivering")  # the first created takes stuck and cancel_delivers
        stalled = _inline_job(client, "stalled")
        assert client.batches.get(name=stalled).state == types.JobState.JOB_STATE_RUNNING
        for name in (stuck, stalled):
            client.batches.cancel(name=name)
            op = _raw_job(client, name)
            assert op["metadata"]["state"] == "BATCH_STATE_CANCELLED" and "output" not in op["metadata"]


def _create_code(client: genai.Client, src: Any, model: str = MODEL) -> int | None:
    try:
        client.batches.create(model=model, src=src)
    except errors.ClientError as exc:
        assert exc.status == "RESOURCE_EXHAUSTED" and "exceeded" in (exc.message or "")
        return exc.code
    return None


def test_creates_past_the_enqueued_token_quota_are_429_until_live_jobs_end(tmp_path: Path) -> None:
    plan = {"jobs": {"stuck": 1}, "quota": {"enqueued_tokens": 100}}
    with faulty(tmp_path, plan) as (emu, client):
        small, big = _upload(client, tmp_path, ["abc"]), _upload(client, tmp_path, ["a" * 150])  # 21 and 95 tokens
        first = str(client.batches.create(model=MODEL, src=small).name)  # stuck: stays live
        wait_done(client, str(client.batches.create(model=MODEL, src=small).name))  # 42 tokens while it ran
        assert _create_code(client, big) == 429
        wait_done(client, str(client.batches.create(model="gemini-2.5-pro", src=big).name))  # another model's own
        status, reply, headers = _raw_create(emu.base_url, "x" * 400)
        assert status == 429 and "Retry-After" not in headers
        assert reply["error"]["status"] == "RESOURCE_EXHAUSTED" and "enqueued token limit" in reply["error"]["message"]
        client.batches.cancel(name=first)
        assert _create_code(client, big) is None
        assert emu.engine.stats()["faults"]["quota_enqueued_tokens"] == 2


def _raw_create(base_url: str, text: str) -> tuple[int, Any, dict[str, str]]:
    import urllib.error
    import urllib.request

    body = {"batch": {"inputConfig": {"requests": {"requests": [
        {"request": {"contents": [{"role": "user", "parts": [{"text": text}]}]}}]}}}}
    req = urllib.request.Request(f"{base_url}/v1beta/models/{MODEL}:batchGenerateContent",
                                 data=json.dumps(body).encode(), method="POST")
    try:
        with urllib.request.urlopen(req) as resp:
            return resp.status, json.loads(resp.read()), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read()), dict(exc.headers)


def test_creates_past_the_concurrent_batch_quota_are_429(tmp_path: Path) -> None:
    with faulty(tmp_path, {"jobs": {"stuck": True}, "quota": {"concurrent_batches": 2}}) as (emu, client):
        src: Any = [{"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}]
        names = [str(client.batches.create(model=MODEL, src=src).name) for _ in range(2)]
        assert _create_code(client, src, "gemini-2.5-pro") == 429
        client.batches.cancel(name=names[0])
        assert _create_code(client, src) is None
        assert emu.engine.stats()["faults"]["quota_concurrent_batches"] == 1


def test_lines_can_be_answered_safety_blocked_or_cut_at_max_tokens(tmp_path: Path) -> None:
    schema = {"type": "OBJECT", "properties": {"label": {"type": "STRING"}, "notes": {"type": "STRING"}}}
    config = {"responseMimeType": "application/json", "responseSchema": schema}
    lines = [{"key": f"k{i:03d}", "request": {"contents": [{"role": "user", "parts": [{"text": f"t{i}"}]}],
                                              **({"generationConfig": config} if i % 2 else {})}}
             for i in range(300)]
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    with faulty(tmp_path, {"seed": 9, "requests": {"blocked": 0.1, "max_tokens": 0.1}}) as (emu, client):
        file = client.files.upload(file=str(path), config=types.UploadFileConfig(mime_type="jsonl")).name
        out = _lines(client, wait_done(client, str(client.batches.create(model=MODEL, src=str(file)).name)))
        faults = emu.engine.stats()["faults"]
    responses = [types.GenerateContentResponse.model_validate(x["response"]) for x in out]
    blocked = [r for r in responses if r.prompt_feedback and r.prompt_feedback.block_reason]
    cut = [(x, r) for x, r in zip(out, responses, strict=True)
           if r.candidates and r.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS]
    assert 15 < len(blocked) < 45 and 15 < len(cut) < 45 and "error" not in str(out)
    assert all(r.candidates is None and r.text is None and r.prompt_feedback and r.prompt_feedback.safety_ratings
               and r.prompt_feedback.block_reason == types.BlockedReason.SAFETY for r in blocked)
    for line, response in cut:
        if int(line["key"][1:]) % 2:
            with pytest.raises(json.JSONDecodeError):
                json.loads(response.text or "")
    assert faults == {"line_blocked": len(blocked), "line_max_tokens": len(cut)}
