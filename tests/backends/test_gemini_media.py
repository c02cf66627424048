"""A unit's local media on the Gemini API (the emulator): small files inline, larger ones uploaded once per
content through the Files API, and the unit's lines rewritten to name them; the kept lines stay as written."""

from __future__ import annotations

import base64
import hashlib
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from support.emulator_helpers import wait_done
from support.media_files import pdf, png, wav
from support.stall_proxy import stall_proxy

from batchflow.backends.gemini import GeminiBackend, make_client
from batchflow.backends.gemini_media import GcsMedia, GeminiMedia
from batchflow.emulator import start_in_thread
from batchflow.errors import CallTimedOut
from batchflow.request.media import resolve
from batchflow.spec.limits import INLINE_MAX_BYTES, MEDIA_FILE_HOURS, MEDIA_MIME_TYPES, MEDIA_REUSE_MIN_HOURS


def _line(key: str, file: Path) -> bytes:
    media = resolve(str(file), file.parent, mime_types=MEDIA_MIME_TYPES, max_bytes=10**9)
    part = {"fileData": {"file_uri": media.tagged(), "mime_type": media.mime_type}}
    request = {"contents": [{"role": "user", "parts": [{"text": "Describe it."}, part]}]}
    return orjson.dumps({"key": key, "request": request}, option=orjson.OPT_APPEND_NEWLINE)


def test_identical_files_are_uploaded_once_and_small_ones_go_inline(tmp_path: Path, emulator_url: str) -> None:
    big = wav(3, seconds=INLINE_MAX_BYTES / 8000 + 1)
    for name, data in {"a.wav": big, "b.wav": big, "c.png": png(1)}.items():
        (tmp_path / name).write_bytes(data)
    unit = tmp_path / "unit.jsonl"
    unit.write_bytes(b"".join(_line(k, tmp_path / k) for k in ("a.wav", "b.wav", "c.png")))
    kept = unit.read_bytes()
    client = make_client("test", emulator_url)
    media = GeminiMedia(client)
    backend = GeminiBackend(client)
    backend.media = media
    staged = backend.stage(unit, "batchflow-media-test-unit")

    assert media.uploads == 1
    assert unit.read_bytes() == kept  # the lines kept name the files by content, as rendered
    assert not (tmp_path / "unit.jsonl.staged").exists()
    sent = tmp_path / "sent.jsonl"
    client.files.download(file=staged, destination=str(sent))
    lines = [orjson.loads(line) for line in sent.read_bytes().splitlines()]
    parts = [line["request"]["contents"][0]["parts"][1] for line in lines]
    assert parts[0] == parts[1] and parts[0]["fileData"]["mimeType"] == "audio/wav"
    uploaded = client.files.get(name="files/" + parts[0]["fileData"]["fileUri"].rsplit("/files/", 1)[1])
    assert int(uploaded.size_bytes or 0) == len(big)
    assert base64.b64decode(parts[2]["inlineData"]["data"]) == png(1)


def test_the_staged_unit_reaches_the_model_as_the_files_bytes(tmp_path: Path, emulator_url: str) -> None:
    files = {"a.wav": wav(5, seconds=INLINE_MAX_BYTES / 8000 + 1), "b.wav": wav(5, seconds=INLINE_MAX_BYTES / 8000 + 1),
             "c.png": png(2), "d.pdf": pdf(2, pages=2)}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    unit = tmp_path / "unit.jsonl"
    unit.write_bytes(b"".join(_line(k, tmp_path / k) for k in files))
    client = make_client("test", emulator_url)
    backend = GeminiBackend(client)
    backend.media = media = GeminiMedia(client)
    job = wait_done(client, client.batches.create(model="gemini-2.5-flash",
                                                  src=backend.stage(unit, "batchflow-media-bytes")).name or "")
    assert job.dest is not None and job.dest.file_name
    lines = {x["key"]: x for x in map(orjson.loads, client.files.download(file=job.dest.file_name).splitlines())}
    mimes = {"a.wav": "audio/wav", "b.wav": "audio/wav", "c.png": "image/png", "d.pdf": "application/pdf"}
    for name, data in files.items():
        text = lines[name]["response"]["candidates"][0]["content"]["parts"][0]["text"]
        assert text.endswith(f"[{mimes[name]} {hashlib.sha256(data).hexdigest()[:12]} {len(data)} bytes]"), name
    assert media.uploads == 1  # a.wav and b.wav are one content; c.png and d.pdf went inline


def test_one_backend_uploads_again_once_its_upload_has_less_than_a_day_to_live(tmp_path: Path,
                                                                                emulator_url: str) -> None:
    big = wav(13, seconds=INLINE_MAX_BYTES / 8000 + 1)
    (tmp_path / "a.wav").write_bytes(big)
    unit = tmp_path / "unit.jsonl"
    unit.write_bytes(_line("a", tmp_path / "a.wav"))
    now = [time.time()]
    client = make_client("test", emulator_url)
    backend = GeminiBackend(client)
    backend.media = media = GeminiMedia(client, clock=lambda: now[0])
    backend.stage(unit, "batchflow-media-retry-1")
    now[0] += (MEDIA_FILE_HOURS - MEDIA_REUSE_MIN_HOURS) * 3600 - 60  # a minute more than a day left: reused
    backend.stage(unit, "batchflow-media-retry-2")
    assert media.uploads == 1
    now[0] += 120  # less than a day left: a job created now might outlive it
    backend.stage(unit, "batchflow-media-retry-3")
    assert media.uploads == 2


def test_release_deletes_only_the_specs_own_uploads(tmp_path: Path, emulator_url: str) -> None:
    big = wav(17, seconds=INLINE_MAX_BYTES / 8000 + 1)
    (tmp_path / "a.wav").write_bytes(big)
    unit = tmp_path / "unit.jsonl"
    unit.write_bytes(_line("a", tmp_path / "a.wav"))
    client = make_client("test", emulator_url)
    mine, theirs = GeminiMedia(client, owner="release-mine"), GeminiMedia(client, owner="release-theirs")
    for media in (mine, theirs):
        backend = GeminiBackend(client)
        backend.media = media
        backend.stage(unit, "batchflow-media-release")

    def owners() -> list[str]:
        return sorted(f.display_name.split("-")[-2] for f in client.files.list()
                      if (f.display_name or "").startswith("batchflow-media-release-"))

    assert (mine.uploads, theirs.uploads, owners()) == (1, 1, ["mine", "theirs"])  # one content, one each
    assert mine.release() == 1
    assert owners() == ["theirs"]
    assert GeminiMedia(client, owner="release-theirs").release() == 1  # a later run finds and deletes it
    assert owners() == []


def _gs_unit(tmp_path: Path, fs: Any, bucket: str, files: dict[str, bytes]) -> Path:
    """A unit whose lines name gs:// objects by their md5, as rendering writes them."""
    for name, data in files.items():
        fs.pipe(f"{bucket}/media/{name}", data)
    unit = tmp_path / "unit.jsonl"
    unit.write_bytes(b"".join(_gs_line(name, f"gs://{bucket}/media/{name}") for name in files))
    return unit


def _gs_line(key: str, uri: str) -> bytes:
    media = resolve(uri, Path("."), mime_types=MEDIA_MIME_TYPES, max_bytes=10**9)
    assert media.identity.startswith("md5:")
    part = {"fileData": {"file_uri": media.tagged(), "mime_type": media.mime_type}}
    request = {"contents": [{"role": "user", "parts": [{"text": "Describe it."}, part]}]}
    return orjson.dumps({"key": key, "request": request}, option=orjson.OPT_APPEND_NEWLINE)


def _answers(client: Any, backend: GeminiBackend, unit: Path) -> dict[str, str]:
    job = wait_done(client, client.batches.create(model="gemini-2.5-flash",
                                                  src=backend.stage(unit, "batchflow-media-gs")).name or "")
    assert job.dest is not None and job.dest.file_name
    lines = map(orjson.loads, client.files.download(file=job.dest.file_name).splitlines())
    return {x["key"]: x["response"]["candidates"][0]["content"]["parts"][0]["text"] for x in lines}


def _named(data: bytes, mime: str) -> str:
    return f"[{mime} {hashlib.sha256(data).hexdigest()[:12]} {len(data)} bytes]"


@pytest.mark.gcs
def test_gs_objects_are_copied_through_without_credentials(tmp_path: Path, fs: Any, bucket: str) -> None:
    """With an API key alone (no Google credentials to register with), a gs:// object's bytes are read and staged
    as a local file's are: a small one inline, a large one uploaded once by content; the model reads its bytes."""
    files = {"big.wav": wav(8, seconds=INLINE_MAX_BYTES / 8000 + 1), "small.png": png(8)}
    unit = _gs_unit(tmp_path, fs, bucket, files)
    with start_in_thread(tmp_path / "emu", job_seconds=0.2) as emulator:
        client = make_client("test", emulator.base_url)
        backend = GeminiBackend(client)
        backend.media = media = GeminiMedia(client, gcs=(gcs := GcsMedia(client, find_credentials=False)))
        answers = _answers(client, backend, unit)
    assert answers["big.wav"].endswith(_named(files["big.wav"], "audio/wav"))
    assert answers["small.png"].endswith(_named(files["small.png"], "image/png"))
    assert (gcs.copied, gcs.registered, media.uploads) == (2, 0, 1)


@pytest.mark.gcs
def test_gs_objects_are_registered_with_google_credentials(tmp_path: Path, fs: Any, bucket: str) -> None:
    """With credentials, each object is registered once through google-genai's files.register_files (the emulator
    reads it from the GCS emulator) and the line names the registered file; nothing is uploaded."""
    from google.oauth2.credentials import Credentials

    data = pdf(9, pages=3)
    unit = _gs_unit(tmp_path, fs, bucket, {"a.pdf": data})
    unit.write_bytes(unit.read_bytes() + unit.read_bytes().replace(b'"a.pdf"', b'"b.pdf"', 1))  # the same object
    with start_in_thread(tmp_path / "emu", job_seconds=0.2) as emulator:
        client = make_client("test", emulator.base_url)
        backend = GeminiBackend(client)
        gcs = GcsMedia(client, credentials=Credentials(token="test-token"))
        backend.media = media = GeminiMedia(client, gcs=gcs)
        answers = _answers(client, backend, unit)
        registered = [f for f in client.files.list() if f.source is not None and f.source.name == "REGISTERED"]
    assert answers["a.pdf"].endswith(_named(data, "application/pdf")) and answers["b.pdf"] == answers["a.pdf"]
    assert (gcs.registered, gcs.copied, media.uploads, len(registered)) == (1, 0, 0, 1)


@pytest.mark.gcs
def test_a_copy_through_from_a_stalled_gcs_ends_naming_the_object_and_the_host(
        tmp_path: Path, fs: Any, bucket: str, gcs_emulator: str, emulator_url: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The read of a gs:// object to copy it to the Files API is bounded as every gs:// transfer is: a GCS that
    stops sending the object's bytes ends the staging with the one line naming the call, the object and the host,
    instead of a run waiting forever."""
    unit = _gs_unit(tmp_path, fs, bucket, {"big.wav": wav(4, seconds=INLINE_MAX_BYTES / 8000 + 1)})
    monkeypatch.setenv("BATCHFLOW_CALL_TIMEOUT", "0.5")
    with stall_proxy(gcs_emulator, mode="stall_body", after=200) as proxy:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
        client = make_client("test", emulator_url)
        backend = GeminiBackend(client)
        backend.media = GeminiMedia(client, gcs=GcsMedia(client, find_credentials=False))
        start = time.monotonic()
        with pytest.raises(CallTimedOut) as raised:
            backend.stage(unit, "batchflow-media-stalled")
        took = time.monotonic() - start
    message = str(raised.value)
    assert f"copy media gs://{bucket}/media/big.wav" in message and f"no answer from {proxy.address}" in message
    assert took < 30
