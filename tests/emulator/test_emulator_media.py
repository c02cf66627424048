"""The emulator reads media parts as the services do: inline bytes, its own Files API files, gs:// objects of the
GCS emulator; each answer names the bytes it read (`[MIME SHA12 BYTES bytes]`) and counts their tokens."""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google import genai
from google.genai import types
from support.emulator_helpers import wait_done
from support.media_files import pdf, png, wav

from batchflow.emulator import RunningEmulator, start_in_thread
from batchflow.emulator.model import deterministic as model
from batchflow.emulator.wire.errors import ApiError
from batchflow.spec import limits

MODEL = "gemini-2.5-flash"
HOUR = 3600.0


def _label(mime: str, data: bytes) -> str:
    return f"[{mime} {hashlib.sha256(data).hexdigest()[:12]} {len(data)} bytes]"


def _inline(mime: str, data: bytes) -> dict[str, Any]:
    return {"inline_data": {"mime_type": mime, "data": base64.b64encode(data).decode()}}


def _request(*parts: dict[str, Any]) -> dict[str, Any]:
    return {"contents": [{"role": "user", "parts": [{"text": "Describe this."}, *parts]}]}


def _text(response: dict[str, Any]) -> str:
    return str(response["candidates"][0]["content"]["parts"][0]["text"])


def _details(response: dict[str, Any]) -> dict[str, int]:
    return {d["modality"]: d["tokenCount"] for d in response["usageMetadata"]["promptTokensDetails"]}


def test_inline_parts_are_named_by_mime_sha12_and_size_in_the_answer() -> None:
    image, sound = png(1), wav(2)
    response = model.generate(_request(_inline("image/png", image), _inline("audio/wav", sound)), MODEL)
    assert _text(response).endswith(f"{_label('image/png', image)} {_label('audio/wav', sound)}")


@pytest.mark.parametrize(("mime", "data", "modality", "tokens"), [
    ("image/png", png(1, 384, 384), "IMAGE", 258),
    ("image/png", png(1, 1000, 800), "IMAGE", 258 * 2 * 2),
    ("application/pdf", pdf(1, pages=3), "DOCUMENT", 3 * 258),
    ("audio/wav", wav(1, seconds=2.0), "AUDIO", 2 * 32),
])
def test_media_tokens_follow_the_documented_rates(mime: str, data: bytes, modality: str, tokens: int) -> None:
    response = model.generate(_request(_inline(mime, data)), MODEL)
    details = _details(response)
    assert details[modality] == tokens
    assert response["usageMetadata"]["promptTokenCount"] == sum(details.values()) == details["TEXT"] + tokens


def test_a_mime_type_the_model_refuses_is_a_400() -> None:
    with pytest.raises(ApiError) as caught:
        model.generate(_request(_inline("application/zip", b"PK\x03\x04")), MODEL)
    assert (caught.value.code, caught.value.message) == (400, "Unsupported MIME type: application/zip")


def test_inline_data_over_the_request_limit_is_a_400(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "INLINE_REQUEST_MAX_BYTES", 100)
    model.generate(_request(_inline("image/png", b"x" * 60)), MODEL)  # 80 base64 characters: under the limit
    with pytest.raises(ApiError, match="payload size exceeds the limit") as caught:
        model.generate(_request(_inline("image/png", b"x" * 60), _inline("image/png", b"y" * 60)), MODEL)
    assert caught.value.code == 400


def test_text_only_answers_carry_no_modality_details() -> None:
    response = model.generate({"contents": [{"parts": [{"text": "hello"}]}]}, MODEL)
    assert "promptTokensDetails" not in response["usageMetadata"]


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def emulator(tmp_path: Path, clock: Clock) -> Iterator[RunningEmulator]:
    with start_in_thread(tmp_path / "emu", clock=clock) as running:
        yield running


@pytest.fixture
def client(emulator: RunningEmulator) -> genai.Client:
    return genai.Client(api_key="test", http_options=types.HttpOptions(base_url=emulator.base_url))


def _file_part(uri: str, mime: str) -> dict[str, Any]:
    return {"file_data": {"file_uri": uri, "mime_type": mime}}


def _run(client: genai.Client, tmp_path: Path, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A file batch of `requests` through the SDK; its output lines by key."""
    source = tmp_path / f"in-{time.monotonic_ns()}.jsonl"
    source.write_text("".join(json.dumps({"key": f"k{i}", "request": r}) + "\n" for i, r in enumerate(requests)))
    uploaded = client.files.upload(file=str(source), config=types.UploadFileConfig(mime_type="jsonl"))
    job = wait_done(client, client.batches.create(model=MODEL, src=uploaded.name).name or "")
    assert job.dest is not None and job.dest.file_name
    lines = [json.loads(x) for x in client.files.download(file=job.dest.file_name).decode().splitlines()]
    return sorted(lines, key=lambda x: int(x["key"][1:]))


def _upload(client: genai.Client, tmp_path: Path, data: bytes, mime: str) -> types.File:
    path = tmp_path / f"media-{time.monotonic_ns()}"
    path.write_bytes(data)
    return client.files.upload(file=str(path), config=types.UploadFileConfig(mime_type=mime))


def test_files_api_parts_are_read_from_the_store_by_name_or_uri(client: genai.Client, tmp_path: Path) -> None:
    image, document = png(7, 500, 500), pdf(3, pages=2)
    first, second = _upload(client, tmp_path, image, "image/png"), _upload(client, tmp_path, document,
                                                                           "application/pdf")
    assert first.uri and first.name and second.name
    lines = _run(client, tmp_path, [_request(_file_part(first.uri, "image/png")),
                                    _request(_file_part(second.name, "application/pdf"))])
    assert _text(lines[0]["response"]).endswith(_label("image/png", image))
    assert _details(lines[0]["response"])["IMAGE"] == 258  # 500 px a side: one 768 px tile
    assert _text(lines[1]["response"]).endswith(_label("application/pdf", document))
    assert _details(lines[1]["response"])["DOCUMENT"] == 2 * 258


def test_a_missing_or_expired_file_is_that_lines_403(client: genai.Client, tmp_path: Path, clock: Clock) -> None:
    image = png(9)
    uploaded = _upload(client, tmp_path, image, "image/png")
    assert uploaded.name
    lines = _run(client, tmp_path, [_request(_file_part("files/nosuchfile", "image/png")),
                                    _request(_file_part(uploaded.name, "image/png"))])
    assert lines[0]["error"] == {"code": 403, "status": "PERMISSION_DENIED", "message": (
        "You do not have permission to access the File nosuchfile or it may not exist.")}
    assert _text(lines[1]["response"]).endswith(_label("image/png", image))
    clock.now += limits.MEDIA_FILE_HOURS * HOUR + 1  # the Files API keeps an upload 48 hours
    expired = _run(client, tmp_path, [_request(_file_part(uploaded.name, "image/png"))])
    assert expired[0]["error"]["code"] == 403
    assert uploaded.name.removeprefix("files/") in expired[0]["error"]["message"]


@pytest.mark.gcs
def test_gs_parts_are_read_from_cloud_storage_and_a_missing_object_is_a_400(
        gcs_emulator: str, client: genai.Client, tmp_path: Path) -> None:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    bucket = storage.Client(project="test", credentials=AnonymousCredentials()).create_bucket(
        f"media-{time.monotonic_ns()}")
    sound = wav(4, seconds=3.0)
    bucket.blob("calls/a.wav").upload_from_string(sound, content_type="audio/wav")
    lines = _run(client, tmp_path, [_request(_file_part(f"gs://{bucket.name}/calls/a.wav", "audio/wav")),
                                    _request(_file_part(f"gs://{bucket.name}/calls/gone.wav", "audio/wav"))])
    assert _text(lines[0]["response"]).endswith(_label("audio/wav", sound))
    assert _details(lines[0]["response"])["AUDIO"] == 3 * 32
    assert lines[1]["error"]["code"] == 400
    assert f"gs://{bucket.name}/calls/gone.wav" in lines[1]["error"]["message"]


def test_jpeg_size_is_read_from_its_frame_header() -> None:
    from batchflow.libs.media_info import image_size

    frame = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, 1200, 1600, 1) + b"\x01\x11\x00"
    data = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + frame + b"\xff\xd9"
    assert image_size(data) == (1600, 1200)
    response = model.generate(_request(_inline("image/jpeg", data)), MODEL)
    assert _details(response)["IMAGE"] == 258 * 3 * 2  # 1600 x 1200: 3 x 2 tiles of 768 px


def test_an_upload_past_48_hours_is_gone_from_get_and_list(client: genai.Client, emulator: RunningEmulator,
                                                           tmp_path: Path) -> None:
    from google.genai import errors
    from support.emulator_helpers import http_json

    uploaded = _upload(client, tmp_path, png(5), "image/png")
    assert uploaded.name and uploaded.expiration_time is not None
    assert [f.name for f in client.files.list()] == [uploaded.name]
    status, body = http_json("POST", f"{emulator.base_url}/_emulator/age_files?seconds={47 * HOUR}")
    assert (status, body) == (200, {"files": 1})
    assert client.files.get(name=uploaded.name).name == uploaded.name  # an hour to live: still there
    http_json("POST", f"{emulator.base_url}/_emulator/age_files?seconds={HOUR}")
    with pytest.raises(errors.ClientError) as caught:
        client.files.get(name=uploaded.name)
    assert caught.value.code == 404
    assert list(client.files.list()) == []


def test_an_upload_past_the_projects_file_storage_is_a_429_until_a_file_is_deleted(tmp_path: Path) -> None:
    """`quota.file_storage_bytes` of a fault plan: the uploads the project holds at once, as the service counts
    them (FileStorageBytesPerProject); past it, 429 RESOURCE_EXHAUSTED naming the metric; a deletion makes room."""
    from google.genai import errors
    from support.emulator_helpers import http_json

    plan = tmp_path / "plan.yaml"
    plan.write_text("quota: {file_storage_bytes: 1000}\n")
    with start_in_thread(tmp_path / "emu", faults=plan) as running:
        client = genai.Client(api_key="test", http_options=types.HttpOptions(base_url=running.base_url))
        first = _upload(client, tmp_path, b"a" * 600, "text/plain")
        with pytest.raises(errors.ClientError) as caught:
            _upload(client, tmp_path, b"b" * 600, "text/plain")
        assert caught.value.code == 429 and caught.value.status == "RESOURCE_EXHAUSTED"
        assert "generativelanguage.googleapis.com/file_storage_bytes, limit: 1000" in str(caught.value.message)
        client.files.delete(name=first.name or "")
        assert _upload(client, tmp_path, b"b" * 600, "text/plain").size_bytes == 600
        stats = http_json("GET", f"{running.base_url}/_emulator/stats")[1]
        assert stats["faults"]["quota_file_storage_bytes"] == 1
