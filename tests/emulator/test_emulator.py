"""The emulator driven by the real, unmodified google-genai SDK against a real local server."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google import genai
from google.genai import errors, types
from support.emulator_helpers import http_json, wait_done

from batchflow.emulator import RunningEmulator, start_in_thread

MODEL = "gemini-2.5-flash"


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[RunningEmulator]:
    with start_in_thread(tmp_path / "emu") as running:
        yield running


@pytest.fixture
def client(emulator: RunningEmulator) -> Iterator[genai.Client]:
    with _client(emulator) as c:
        yield c


def _client(emulator: RunningEmulator) -> genai.Client:
    return genai.Client(api_key="test", http_options=types.HttpOptions(base_url=emulator.base_url))


def _request(text: str, **generation_config: Any) -> dict[str, Any]:
    request: dict[str, Any] = {"contents": [{"role": "user", "parts": [{"text": text}]}]}
    if generation_config:
        request["generationConfig"] = generation_config
    return request


def _upload(client: genai.Client, tmp_path: Path, lines: list[Any], raw: tuple[str, ...] = ()) -> str:
    path = tmp_path / f"in-{time.monotonic_ns()}.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines) + "".join(r + "\n" for r in raw))
    uploaded = client.files.upload(file=str(path), config=types.UploadFileConfig(mime_type="jsonl"))
    assert uploaded.name
    return uploaded.name


def _results(client: genai.Client, job: types.BatchJob) -> list[dict[str, Any]]:
    assert job.dest is not None and job.dest.file_name
    data = client.files.download(file=job.dest.file_name)
    return [json.loads(line) for line in data.decode().splitlines()]


def _raw(emulator: RunningEmulator, method: str, path: str, body: bytes | None = None) -> tuple[int, Any]:
    return http_json(method, emulator.base_url + path, body)


def _text(line: dict[str, Any]) -> str:
    return str(line["response"]["candidates"][0]["content"]["parts"][0]["text"])


def test_file_batch_round_trip_keeps_keys_in_input_order(client: genai.Client, tmp_path: Path) -> None:
    lines = [{"key": f"k{i:03d}", "request": _request(f"item {i}")} for i in range(120)]
    job = client.batches.create(model=MODEL, src=_upload(client, tmp_path, lines),
                                config=types.CreateBatchJobConfig(display_name="round-trip"))
    assert job.name and job.name.startswith("batches/") and job.display_name == "round-trip"
    done = wait_done(client, job.name)
    assert done.state == types.JobState.JOB_STATE_SUCCEEDED
    assert done.create_time and done.end_time and done.model == f"models/{MODEL}"
    out = _results(client, done)
    assert [x["key"] for x in out] == [x["key"] for x in lines]
    assert all(_text(x) and x["response"]["usageMetadata"]["totalTokenCount"] >= 2 for x in out)
    assert done.dest and done.dest.file_name == f"files/batch-{job.name.removeprefix('batches/')}"


def test_invalid_lines_become_error_lines_and_count_as_failed(
        client: genai.Client, emulator: RunningEmulator, tmp_path: Path) -> None:
    lines = [{"key": "good", "request": _request("fine")}, {"key": "empty", "request": {"contents": []}},
             {"key": "typed", "request": {"contents": "not a list"}}]
    job = client.batches.create(model=MODEL, src=_upload(client, tmp_path, lines, raw=("{not json",)))
    assert job.name
    out = _results(client, wait_done(client, job.name))
    assert [x.get("key") for x in out] == ["good", "empty", "typed", None]
    assert "response" in out[0]
    for bad in out[1:]:
        assert bad["error"]["code"] == 400 and bad["error"]["status"] == "INVALID_ARGUMENT" and bad["error"]["message"]
    _, raw = _raw(emulator, "GET", f"/v1beta/{job.name}")
    assert raw["metadata"]["batchStats"] == {"requestCount": "4", "successfulRequestCount": "1",
                                             "failedRequestCount": "3", "pendingRequestCount": "0"}


SCHEMA = {"type": "OBJECT", "properties": {"label": {"type": "STRING", "enum": ["yes", "no"]},
                                           "score": {"type": "NUMBER", "minimum": 0, "maximum": 1},
                                           "tags": {"type": "ARRAY", "items": {"type": "STRING"}}},
          "required": ["label", "score"]}
JSON_SCHEMA = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 3, "maximum": 5},
                                                "ok": {"type": ["boolean", "null"]}}, "required": ["n"]}


def test_response_schema_answers_are_json_satisfying_the_schema(client: genai.Client, tmp_path: Path) -> None:
    lines = [{"key": "gemini", "request": _request("q", responseMimeType="application/json", responseSchema=SCHEMA)},
             {"key": "json-schema", "request": {**_request("q"), "generation_config": {
                 "response_mime_type": "application/json", "response_json_schema": JSON_SCHEMA}}},
             {"key": "no-mime", "request": _request("q", responseSchema=SCHEMA)}]
    job = client.batches.create(model=MODEL, src=_upload(client, tmp_path, lines))
    assert job.name
    out = {x["key"]: x for x in _results(client, wait_done(client, job.name))}
    gemini = json.loads(_text(out["gemini"]))
    assert gemini["label"] in {"yes", "no"} and 0 <= gemini["score"] <= 1
    assert all(isinstance(t, str) for t in gemini["tags"])
    plain = json.loads(_text(out["json-schema"]))
    assert plain["n"] in {3, 4, 5} and isinstance(plain["ok"], bool)
    assert out["no-mime"]["error"]["code"] == 400


def test_inline_batch_answers_in_order_with_metadata(client: genai.Client) -> None:
    reqs = [types.InlinedRequest(contents=f"inline {i}", metadata={"key": f"in{i}"}) for i in range(6)]
    job = client.batches.create(model=MODEL, src=reqs)
    assert job.name
    got = wait_done(client, job.name).dest.inlined_responses or []  # type: ignore[union-attr]
    assert [r.metadata for r in got] == [{"key": f"in{i}"} for i in range(6)]
    assert all(r.response and r.response.text and f"inline {i}" in r.response.text for i, r in enumerate(got))


def test_list_pages_are_stable_and_newest_first(client: genai.Client, emulator: RunningEmulator) -> None:
    made = [client.batches.create(model=MODEL, src=[types.InlinedRequest(contents="x")]).name for _ in range(5)]
    status, first = _raw(emulator, "GET", "/v1beta/batches?pageSize=2")
    assert status == 200 and [op["name"] for op in first["operations"]] == made[::-1][:2]
    client.batches.create(model=MODEL, src=[types.InlinedRequest(contents="late")])  # must not shift pages
    _, second = _raw(emulator, "GET", f"/v1beta/batches?pageSize=2&pageToken={first['nextPageToken']}")
    assert [op["name"] for op in second["operations"]] == made[::-1][2:4]
    seen = [j.name for j in client.batches.list(config=types.ListBatchJobsConfig(page_size=2))]
    assert set(made) <= set(seen) and len(seen) == len(set(seen)) == 6


def test_cancel_ends_a_live_job_cancelled_without_output(tmp_path: Path) -> None:
    with start_in_thread(tmp_path / "emu", job_seconds=60) as emu, _client(emu) as client:
        job = client.batches.create(model=MODEL, src=[types.InlinedRequest(contents="x")])
        assert job.name and job.state == types.JobState.JOB_STATE_PENDING
        client.batches.cancel(name=job.name)
        cancelled = client.batches.get(name=job.name)
        assert cancelled.state == types.JobState.JOB_STATE_CANCELLED and cancelled.end_time
        assert cancelled.dest is None


def test_deleted_batch_is_404(client: genai.Client) -> None:
    job = client.batches.create(model=MODEL, src=[types.InlinedRequest(contents="x")])
    assert job.name
    client.batches.delete(name=job.name)
    with pytest.raises(errors.ClientError) as info:
        client.batches.get(name=job.name)
    assert info.value.code == 404


@pytest.mark.parametrize("path", ["/v1beta/batches/nope", "/v1/files/nope", "/v1/nothing/here"])
def test_unknown_resources_are_404_in_google_error_shape(emulator: RunningEmulator, path: str) -> None:
    status, body = _raw(emulator, "GET", path)
    assert status == 404
    assert body["error"]["code"] == 404 and body["error"]["status"] == "NOT_FOUND" and body["error"]["message"]


@pytest.mark.parametrize("body", [
    b"{not json",
    b'{"batch": {"inputConfig": {"requests": {"requests": [{"request": {"contents": 5}}]}}}}',
    b'{"batch": {"inputConfig": {"fileName": "files/missing"}}}',
    b'{"batch": {"displayName": "no input"}}',
    b'{"batch": {"inputConfig": {"requests": {"requests": []}}}}',
])
def test_malformed_create_is_400_invalid_argument(emulator: RunningEmulator, body: bytes) -> None:
    status, reply = _raw(emulator, "POST", f"/v1beta/models/{MODEL}:batchGenerateContent", body)
    assert status == 400 and reply["error"]["status"] == "INVALID_ARGUMENT"


def test_restarted_emulator_keeps_jobs_and_finishes_a_job_that_came_due_while_down(tmp_path: Path) -> None:
    data = tmp_path / "emu"
    with start_in_thread(data, job_seconds=0.5) as emu, _client(emu) as client:
        name = client.batches.create(model=MODEL, src=_upload(client, tmp_path, [
            {"key": "a", "request": _request("survive")}])).name
        assert name
    time.sleep(0.6)
    with start_in_thread(data) as emu, _client(emu) as client:
        job = client.batches.get(name=name)
        assert job.state == types.JobState.JOB_STATE_SUCCEEDED
        assert [x["key"] for x in _results(client, job)] == ["a"]


def test_embed_batches_give_vectors_of_the_asked_dimension_unit_only_at_full_size(client: genai.Client,
                                                                                 tmp_path: Path) -> None:
    lines = [{"key": "d", "request": {"content": {"parts": [{"text": "default size"}]}}},
             {"key": "s", "request": {"content": {"parts": [{"text": "default size"}]}, "output_dimensionality": 128}},
             {"key": "bad", "request": {"content": {"parts": []}}},
             {"key": "narrow", "request": {"content": {"parts": [{"text": "x"}]}, "output_dimensionality": 64}}]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # create_embeddings is marked experimental by the SDK
        from_file = client.batches.create_embeddings(model="gemini-embedding-001",
                                                     src={"file_name": _upload(client, tmp_path, lines)})
        inline = client.batches.create_embeddings(model="gemini-embedding-001", src={"inlined_requests": {
            "contents": ["one", "two"], "config": {"output_dimensionality": 256}}})
    assert from_file.name and inline.name
    out = {x["key"]: x for x in _results(client, wait_done(client, from_file.name))}
    full, small = (out[key]["response"]["embedding"]["values"] for key in ("d", "s"))
    assert len(full) == 3072 and math.isclose(math.hypot(*full), 1.0, abs_tol=1e-5), "the default, a unit vector"
    assert len(small) == 128 and small == full[:128], "below 3072 the full vector cut short, as Google documents"
    assert out["bad"]["error"]["code"] == 400
    narrow = out["narrow"]["error"]  # below the documented 128..3072, as Vertex and batchflow refuse it
    assert (narrow["code"], narrow["status"]) == (400, "INVALID_ARGUMENT"), narrow
    assert narrow["message"] == "output_dimensionality must be in 128..3072 for gemini-embedding-001, got 64"
    vectors = wait_done(client, inline.name).dest.inlined_embed_content_responses  # type: ignore[union-attr]
    assert vectors and [len(v.response.embedding.values) for v in vectors] == [256, 256]  # type: ignore[union-attr,arg-type]


def test_same_request_gets_same_answer_and_different_requests_differ(client: genai.Client) -> None:
    def answers() -> list[str]:
        job = client.batches.create(model=MODEL, src=[types.InlinedRequest(contents=t) for t in ("a", "b", "a")])
        assert job.name
        got = wait_done(client, job.name).dest.inlined_responses or []  # type: ignore[union-attr]
        return [r.response.text or "" for r in got if r.response]

    first, second = answers(), answers()
    assert first == second and first[0] == first[2] != first[1]


def test_stats_count_creates_per_display_name(client: genai.Client, emulator: RunningEmulator) -> None:
    for name in ("a", "a", "b"):
        client.batches.create(model=MODEL, src=[types.InlinedRequest(contents="x")],
                              config=types.CreateBatchJobConfig(display_name=name))
    _, stats = _raw(emulator, "GET", "/_emulator/stats")
    assert stats["creates_by_display_name"] == {"a": 2, "b": 1}
    assert stats["calls_by_endpoint"]["batches.create"] == 3


def test_upload_resumes_in_chunks_and_rejects_a_wrong_offset(emulator: RunningEmulator) -> None:
    start = urllib.request.Request(emulator.base_url + "/upload/v1beta/files", method="POST",
                                   data=b'{"file": {"display_name": "chunks"}}',
                                   headers={"X-Goog-Upload-Protocol": "resumable", "X-Goog-Upload-Command": "start",
                                            "X-Goog-Upload-Header-Content-Length": "6"})
    with urllib.request.urlopen(start) as resp:
        url = resp.headers["X-Goog-Upload-URL"]
    assert url.startswith(emulator.base_url + "/upload/")

    def chunk(data: bytes, offset: int, command: str) -> urllib.request.Request:
        return urllib.request.Request(url, data=data, method="POST", headers={
            "X-Goog-Upload-Command": command, "X-Goog-Upload-Offset": str(offset)})

    with urllib.request.urlopen(chunk(b"abc", 0, "upload")) as resp:
        assert resp.headers["X-Goog-Upload-Status"] == "active"
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(chunk(b"def", 1, "upload, finalize"))
    assert info.value.code == 400
    info.value.close()
    with urllib.request.urlopen(chunk(b"def", 3, "upload, finalize")) as resp:
        assert resp.headers["X-Goog-Upload-Status"] == "final"
        file = json.loads(resp.read())["file"]
    assert file["sizeBytes"] == "6" and file["state"] == "ACTIVE" and file["displayName"] == "chunks"
    with urllib.request.urlopen(f"{emulator.base_url}/v1beta/{file['name']}:download?alt=media") as resp:
        assert resp.read() == b"abcdef"


def test_files_list_pages_and_delete(client: genai.Client, tmp_path: Path) -> None:
    names = [_upload(client, tmp_path, [{"n": i}]) for i in range(3)]
    assert [f.name for f in client.files.list(config=types.ListFilesConfig(page_size=2))] == names[::-1]
    client.files.delete(name=names[0])
    with pytest.raises(errors.ClientError) as info:
        client.files.get(name=names[0])
    assert info.value.code == 404


def test_cli_prints_base_url_first_and_exits_cleanly_on_sigterm(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "batchflow", "emulator", "--port", "0",
                             "--data-dir", str(tmp_path / "emu")], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        base = proc.stdout.readline().strip()
        assert base.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(base + "/_emulator/stats") as resp:
            assert resp.status == 200
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
        if proc.stdout:
            proc.stdout.close()


def test_empty_lists_omit_their_repeated_field_as_proto3_json_does(emulator: RunningEmulator) -> None:
    for path in ("v1beta/batches", "v1beta/files", "v1beta1/publishers/acme/models"):
        assert http_json("GET", f"{emulator.base_url}/{path}") == (200, {})


@pytest.mark.parametrize("read_size", [1 << 20, 3])
def test_the_request_lines_counted_as_an_upload_arrives_agree_with_the_file(tmp_path: Path, read_size: int,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A create takes an uploaded file's request count from the upload (it does not read the file again): for any
    content cut into any chunks, that count is the file's non-blank lines, or unknown (then the file is read).
    ``read_size`` 3: each chunk read from the socket a few bytes at a time, into the same buffer."""
    import io
    import itertools
    import random

    from batchflow.emulator.gemini import files
    from batchflow.emulator.gemini.execute import count_requests
    from batchflow.emulator.gemini.files import FileStore

    monkeypatch.setattr(files, "_COPY_BUFFER", read_size)
    store, rng, counted = FileStore(tmp_path, time.time), random.Random(7), 0
    pieces = [b'{"a":1}', b"", b" ", b'  {"b":2}', b"\t", b"\r", b'{"c":3}\r', b"x y"]
    for _ in range(400):
        data = b"\n".join(rng.choice(pieces) for _ in range(rng.randint(0, 8))) + rng.choice([b"", b"\n"])
        cuts = sorted({0, len(data), *(rng.randint(0, len(data)) for _ in range(rng.randint(0, 4)))})
        upload = store.start_upload({"file": {"mimeType": "jsonl"}}, None, None)
        for start, end in itertools.pairwise(cuts):
            store.receive(upload, start, io.BytesIO(data[start:end]), end - start)
        record = store.finalize(upload)
        if record.lines is not None:
            counted += 1
            assert record.lines == count_requests(store.data_path(record.id)), data
        assert store.data_path(record.id).read_bytes() == data
    assert counted > 30  # a file whose every line starts with a non-blank byte (JSONL as written) is counted
