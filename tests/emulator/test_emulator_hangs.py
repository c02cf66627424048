"""Hang faults: a call the emulator accepts and never answers, answers with the headers and half a body, or whose
upload it stops reading half-way; driven by the real google-genai SDK (its own timeout) and by raw sockets."""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from google import genai
from google.genai import types

from batchflow.emulator import RunningEmulator, start_in_thread
from batchflow.emulator.faults.plan import load_faults
from batchflow.libs.refusals import http_module

MODEL = "gemini-2.5-flash"
TIMEOUT_MS = 300  # the SDK's own per-request timeout: a hung call fails after this long


@contextmanager
def hung(tmp_path: Path, plan: dict[str, Any]) -> Iterator[tuple[RunningEmulator, genai.Client]]:
    """An emulator serving `plan` and an SDK client of it that tries each call once, with a short timeout."""
    path = tmp_path / "faults.yaml"
    path.write_text(yaml.safe_dump(plan), encoding="utf-8")
    with start_in_thread(tmp_path / "emu", faults=path) as emulator:
        options = types.HttpOptions(base_url=emulator.base_url, timeout=TIMEOUT_MS,
                                    retry_options=types.HttpRetryOptions(attempts=1))
        with genai.Client(api_key="test", http_options=options) as client:
            yield emulator, client


def _inline(client: genai.Client, name: str) -> types.BatchJob:
    src: Any = [{"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}]
    return client.batches.create(model=MODEL, src=src, config={"display_name": name})


def _faults(emulator: RunningEmulator) -> dict[str, int]:
    return emulator.engine.faults.counters()


def test_a_hung_create_times_out_in_the_client_and_never_takes_effect(tmp_path: Path) -> None:
    with hung(tmp_path, {"hangs": {"create": {"kind": "hang", "calls": [1]}}}) as (emulator, client):
        start = time.monotonic()
        with pytest.raises(http_module().TimeoutException):
            _inline(client, "first")
        assert time.monotonic() - start < 3
        assert list(client.batches.list()) == []  # the hung create made no job
        second = _inline(client, "second")  # the second call is not scripted: it answers
        assert [j.name for j in client.batches.list()] == [second.name]
        assert _faults(emulator) == {"http_hang": 1}


def test_a_stalled_body_sends_the_headers_then_stops(tmp_path: Path) -> None:
    with hung(tmp_path, {"hangs": {"get": {"kind": "stall_body", "calls": [1]}}}) as (emulator, client):
        job = _inline(client, "j")
        conn = http.client.HTTPConnection(emulator.base_url.removeprefix("http://"), timeout=0.3)
        conn.request("GET", f"/v1beta/{job.name}", headers={"x-goog-api-key": "test"})
        reply = conn.getresponse()
        assert reply.status == 200 and int(reply.headers["Content-Length"]) > 0  # the headers came
        with pytest.raises(TimeoutError):
            reply.read()  # the body never ends
        conn.close()
        assert client.batches.get(name=str(job.name)).name == job.name  # the next get answers in full
        assert _faults(emulator) == {"http_stall_body": 1}


def test_a_stalled_body_times_the_sdk_out(tmp_path: Path) -> None:
    with hung(tmp_path, {"hangs": {"batches.get": {"kind": "stall_body", "rate": 1}}}) as (_, client):
        job = _inline(client, "j")
        with pytest.raises(http_module().TimeoutException):
            client.batches.get(name=str(job.name))


def test_an_upload_stalled_half_way_times_out_and_stores_no_file(tmp_path: Path) -> None:
    data = tmp_path / "in.jsonl"
    data.write_text("".join(f'{{"key": "k{i}", "request": {{"contents": []}}}}\n' for i in range(2000)))
    with hung(tmp_path, {"hangs": {"upload": {"kind": "stall_upload", "rate": 1}}}) as (emulator, client):
        with pytest.raises(http_module().TimeoutException):
            client.files.upload(file=str(data), config=types.UploadFileConfig(mime_type="jsonl"))
        assert list(client.files.list()) == []
        assert _faults(emulator)["http_stall_upload"] >= 1


def _hung_socket(emulator: RunningEmulator) -> socket.socket:
    """A raw connection whose request (a batches.list) the emulator holds."""
    host, port = emulator.base_url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=5)
    sock.sendall(b"GET /v1beta/batches HTTP/1.1\r\nHost: x\r\nx-goog-api-key: test\r\n\r\n")
    return sock


def test_stopping_the_emulator_releases_every_hung_handler(tmp_path: Path) -> None:
    before = set(threading.enumerate())
    with hung(tmp_path, {"hangs": {"list": {"kind": "hang", "rate": 1}}}) as (emulator, _):
        socks = [_hung_socket(emulator) for _ in range(3)]
        deadline = time.monotonic() + 5
        while _faults(emulator).get("http_hang", 0) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _faults(emulator)["http_hang"] == 3
        start = time.monotonic()
    assert time.monotonic() - start < 2  # stop() does not wait on them
    for sock in socks:
        assert sock.recv(100) == b""  # released: the connection closed, no answer ever sent
        sock.close()
    deadline = time.monotonic() + 2
    while set(threading.enumerate()) - before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not set(threading.enumerate()) - before  # no handler thread left blocked


def test_hangs_drawn_by_rate_are_reproducible_from_the_seed(tmp_path: Path) -> None:
    def drawn(seed: int) -> list[str | None]:
        plan = load_faults(_plan_file(tmp_path, {"seed": seed, "hangs": {"*": {"kind": "hang", "rate": 0.3}}}))
        return [plan.hang("batches.get") for _ in range(60)]

    first = drawn(5)
    assert first == drawn(5) and first != drawn(6)
    assert 5 < first.count("hang") < 35 and set(first) == {None, "hang"}
    plan = load_faults(_plan_file(tmp_path, {"hangs": {"*": {"kind": "hang", "rate": 1}}}))
    assert plan.hang("emulator.stats") is None  # the stats are never hung


def test_the_most_specific_hang_rule_wins(tmp_path: Path) -> None:
    plan = load_faults(_plan_file(tmp_path, {"hangs": {"*": {"kind": "hang", "rate": 1},
                                                       "files": {"kind": "stall_body", "rate": 1},
                                                       "files.get": {"kind": "stall_upload", "rate": 1}}}))
    assert [plan.hang(e) for e in ("batches.get", "files.list", "files.get")] == ["hang", "stall_body",
                                                                                   "stall_upload"]


def _plan_file(tmp_path: Path, plan: dict[str, Any]) -> Path:
    path = tmp_path / f"plan-{time.monotonic_ns()}.yaml"
    path.write_text(yaml.safe_dump(plan), encoding="utf-8")
    return path
