"""Requests Google accepts: checked with google-genai's own types before anything is spent, and written as the SDK
sends them (issue 12)."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import orjson
import pytest
import yaml
from support.emulator_helpers import http_json
from support.helpers import cli, read_rows, write_jsonl, write_spec

from batchflow.prepare.prepare import prepare
from batchflow.spec.spec import load_spec
from benchmarks import data as bench_data

RECORDS = [{"id": "a", "text": "tea"}, {"id": "b", "text": "coffee"}]
SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}, "score": {"type": "integer"},
                                           "tags": {"type": "array", "items": {"type": "string"}}},
          "required": ["name"]}
SAFETY = [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_ONLY_HIGH"}]
TOOLS = [{"function_declarations": [{"name": "lookup", "description": "find a word",
                                     "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}]}]
CONFIG = {"temperature": 0.3, "top_p": 0.9, "max_output_tokens": 64, "stop_sequences": ["END"],
          "response_mime_type": "application/json", "response_schema": SCHEMA,
          "thinking_config": {"thinking_budget": 0}}


class _Recorder(BaseHTTPRequestHandler):
    """A stand-in for :generateContent that keeps every body the SDK sends and answers a minimal response."""

    bodies: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", 0))
        self.bodies.append(json.loads(self.rfile.read(length)))
        answer = b'{"candidates": [{"content": {"role": "model", "parts": [{"text": "{}"}]}}]}'
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    _Recorder.bodies = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _Recorder.bodies
    server.shutdown()
    server.server_close()


def _sdk_bodies(base_url: str, bodies: list[dict[str, Any]], vertex: bool) -> list[dict[str, Any]]:
    """What google-genai itself sends for the spec's records: ``models.generate_content`` with the same content
    and config."""
    from conftest import genai_client
    from google.genai import types

    from batchflow.backends.vertex import make_vertex_client

    client = make_vertex_client("p", "us-central1", base_url) if vertex else genai_client(base_url)
    config = types.GenerateContentConfig(system_instruction=types.Content(parts=[types.Part(text="You name drinks.")]),
                                         safety_settings=SAFETY,
                                         tools=TOOLS, **CONFIG)
    for record in RECORDS:
        client.models.generate_content(model="gemini-2.5-flash", config=config,
                                       contents=types.Content(role="user", parts=[
                                           types.Part(text=f"Describe {record['text']}")]))
    return list(bodies)


@pytest.mark.parametrize("backend", ["local", "vertex"])
def test_request_lines_are_what_google_genai_sends(tmp_path: Path, backend: str,
                                                   recorder: tuple[str, list[dict[str, Any]]]) -> None:
    write_jsonl(tmp_path / "data" / "in.jsonl", RECORDS)
    backend_spec = {"type": "vertex", "project": "p", "location": "us-central1", "staging": "gs://b/s"} \
        if backend == "vertex" else {"type": "local"}
    spec = load_spec(write_spec(tmp_path, backend=backend_spec, prompt=None, request={
        "contents": [{"role": "user", "parts": [{"text": "Describe {{ text }}"}]}],
        "system_instruction": {"parts": [{"text": "You name drinks."}]},
        "safety_settings": SAFETY, "tools": TOOLS, "generation_config": CONFIG}))
    state = prepare(spec, tmp_path / "state", 1, None)
    lines = [orjson.loads(line) for line in (tmp_path / "state" / state.shards[0].requests).read_bytes().splitlines()]
    expected = _sdk_bodies(*recorder, vertex=backend == "vertex")
    assert [line["request"] for line in lines] == expected, json.dumps([lines[0]["request"], expected[0]])
    assert expected[0]["generationConfig"]["responseSchema"]["type"] == "OBJECT"  # what the lines once lacked


def test_the_prompt_shorthand_writes_the_same_lines_as_the_sdk(tmp_path: Path,
                                                              recorder: tuple[str, list[dict[str, Any]]]) -> None:
    """``prompt`` + ``system`` + ``generation_config`` (with safety settings and tools in it, as the SDK's config
    takes them), run by the CLI: the unit file's lines are the SDK's requests."""
    write_jsonl(tmp_path / "data" / "in.jsonl", RECORDS)
    path = write_spec(tmp_path, prompt="Describe {{ text }}", system="You name drinks.",
                      generation_config={**CONFIG, "safety_settings": SAFETY, "tools": TOOLS})
    assert cli("run", str(path)).exit_code == 0
    units = sorted((tmp_path / ".batchflow" / "t" / "gen-1" / "shards").glob("shard-*.jsonl"))
    lines = [orjson.loads(line) for line in units[0].read_bytes().splitlines()]
    assert [line["request"] for line in lines] == _sdk_bodies(*recorder, vertex=False)
    assert [r["status"] for r in read_rows(tmp_path / "out" / "result.jsonl")] == ["ok", "ok"]


def test_the_benchmark_floor_writes_what_batchflow_writes(tmp_path: Path) -> None:
    """The benchmark's hand-written request line is the line batchflow writes, byte for byte."""
    bench_data.write_records(tmp_path / "in.jsonl", 3)
    spec = load_spec(bench_data.write_spec(tmp_path, "floor", tmp_path / "in.jsonl", "request"))
    state = prepare(spec, tmp_path / "state", 1, None)
    written = (tmp_path / "state" / state.shards[0].requests).read_bytes().splitlines()
    records = [orjson.loads(line) for line in (tmp_path / "in.jsonl").read_bytes().splitlines()]
    assert written == [orjson.dumps(bench_data.floor_request("request", r)) for r in records]


# --- a corpus of specs the real API would reject ---------------------------------------------------------------

GEN = "generation_config"
BAD: list[tuple[str, dict[str, Any], str]] = [
    ("temperature as a word", {GEN: {"temperature": "zero"}}, "generation_config.temperature: expected a number"),
    ("misspelled top_p", {GEN: {"topp": 0.5}}, "unknown field 'topp' (did you mean 'top_p'?)"),
    ("misspelled MIME type", {GEN: {"response_mime_type": "application/jsn"}},
     "unsupported MIME type 'application/jsn'"),
    ("misspelled schema types", {GEN: {"response_mime_type": "application/json",
                                       "response_schema": {"type": "obj", "properties": {"x": {"type": "strng"}}}}},
     "did you mean 'OBJECT'?"),
    ("misspelled nested schema type", {GEN: {"response_mime_type": "application/json",
                                             "response_schema": {"type": "OBJECT",
                                                                 "properties": {"x": {"type": "strng"}}}}},
     "response_schema.properties.x.type: expected one of STRING"),
    ("schema without a JSON MIME type", {GEN: {"response_schema": {"type": "string"}}},
     "a response schema needs response_mime_type: application/json"),
    ("schema with an unknown keyword", {GEN: {"response_mime_type": "application/json",
                                              "response_schema": {"type": "string", "maxLenght": 3}}},
     "unknown field 'maxLenght'"),
    ("temperature out of range", {GEN: {"temperature": 3}}, "expected a value from 0.0 to 2.0, got 3"),
    ("top_p out of range", {GEN: {"top_p": 1.5}}, "expected a value from 0.0 to 1.0, got 1.5"),
    ("top_k not a number", {GEN: {"top_k": "many"}}, "generation_config.top_k: expected a number"),
    ("max_output_tokens fractional", {GEN: {"max_output_tokens": 1.5}}, "generation_config.max_output_tokens"),
    ("stop sequences not a list", {GEN: {"stop_sequences": "END"}}, "expected a list, got 'END'"),
    ("candidate count zero", {GEN: {"candidate_count": 0}}, "expected a value from 1 to 8, got 0"),
    ("bad response modality", {GEN: {"response_modalities": ["TXT"]}}, "did you mean 'TEXT'?"),
    ("thinking budget as a word", {GEN: {"thinking_config": {"thinking_budget": "lots"}}},
     "thinking_config.thinking_budget: expected an integer"),
    ("unknown thinking field", {GEN: {"thinking_config": {"budget": 10}}}, "unknown field 'budget'"),
    ("a setting of the SDK", {GEN: {"http_options": {"timeout": 5}}}, "a setting of the SDK itself"),
    ("misspelled harm category", {GEN: {"safety_settings": [{"category": "HARM_CATEGORY_HARRASMENT",
                                                             "threshold": "BLOCK_NONE"}]}},
     "did you mean 'HARM_CATEGORY_HARASSMENT'?"),
    ("bad safety threshold", {GEN: {"safety_settings": [{"category": "HARM_CATEGORY_HARASSMENT",
                                                         "threshold": "BLOCK_SOME"}]}},
     "safety_settings.0.threshold: expected one of"),
    ("misspelled tool", {GEN: {"tools": [{"google_serch": {}}]}}, "unknown field 'google_serch'"),
    ("function without a name", {GEN: {"tools": [{"function_declarations": [{"description": "x"}]}]}},
     "function_declarations.0.name: a function needs a name"),
    ("function name with a space", {GEN: {"tools": [{"function_declarations": [{"name": "my func"}]}]}},
     "got 'my func'"),
    ("bad function calling mode", {GEN: {"tool_config": {"function_calling_config": {"mode": "SOMETIMES"}}}},
     "tool_config.function_calling_config.mode: expected one of AUTO"),
    ("unknown request field", {"prompt": None, "request": {"contnts": [], GEN: {}}},
     "request.contnts: unknown field 'contnts' (did you mean 'contents'?)"),
    ("assistant role", {"prompt": None, "request": {"contents": [{"role": "assistant",
                                                                  "parts": [{"text": "{{ text }}"}]}]}},
     "request.contents.0.role: expected one of user, model"),
    ("misspelled part field", {"prompt": None, "request": {"contents": [{"role": "user",
                                                                         "parts": [{"txt": "{{ text }}"}]}]}},
     "request.contents.0.parts.0.txt: unknown field 'txt' (did you mean 'text'?)"),
    ("labels on the Gemini API", {"prompt": None, "request": {"contents": [], "labels": {"team": "a"}}},
     "labels are a Vertex AI field"),
    ("system instruction twice", {"system": "be brief", GEN: {"system_instruction": "be long"}}, "given twice"),
    ("near miss of a model", {"model": "gemini-2.5-flsh"}, "unknown model 'gemini-2.5-flsh' (did you mean "
                                                           "'gemini-2.5-flash'?)"),
    ("an embedding model to generate", {"model": "gemini-embedding-001"}, "is a model for task embed"),
    ("bad embedding task type", {"task": "embed", "prompt": None, "model": "gemini-embedding-001",
                                 "content": "{{ text }}", "embed_config": {"task_type": "RETRIEVAL_DOK"}},
     "embed_config.task_type: expected one of RETRIEVAL_QUERY"),
    ("embedding too wide", {"task": "embed", "prompt": None, "model": "gemini-embedding-001",
                            "content": "{{ text }}", "embed_config": {"output_dimensionality": 5000}},
     "embed_config.output_dimensionality: expected 128 to 3072 for gemini-embedding-001"),
]


@pytest.mark.parametrize(("case", "fields", "message"), BAD, ids=[b[0] for b in BAD])
def test_a_spec_the_api_would_reject_is_refused_before_anything_is_spent(
        tmp_path: Path, emulator_url: str, case: str, fields: dict[str, Any], message: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BF_TEST_KEY", "test")
    write_jsonl(tmp_path / "data" / "in.jsonl", RECORDS)
    name = "bad-" + "".join(c if c.isalnum() else "-" for c in case.lower())[:40]
    path = write_spec(tmp_path, name=name, backend={"type": "gemini", "base_url": emulator_url,
                                                    "api_key_env": "BF_TEST_KEY"}, **fields)
    line = _spec_line(path, fields)
    for command in ("validate", "run"):
        result = cli(command, str(path))
        assert result.exit_code == 2, (command, result.output)
        errors = [e for e in result.stderr.splitlines() if e.startswith("error:")] or result.stderr.splitlines()
        assert message in result.stderr, (command, result.stderr)
        located = [e for e in errors if message in e]
        assert len(located) == 1, errors
        where = re.search(rf"{re.escape(str(path))}:(\d+):(\d+): ", located[0])
        assert where and int(where[1]) >= line, located  # file:line:col, within the spec's field at fault
    status, listing = http_json("GET", f"{emulator_url}/v1beta/batches?pageSize=1000")
    assert status == 200
    assert not [op for op in listing.get("operations", []) if name in op["metadata"].get("displayName", "")]


def _spec_line(path: Path, fields: dict[str, Any]) -> int:
    """The line of the spec where the first key of ``fields`` that holds the mistake is written."""
    text = path.read_text().splitlines()
    key = next(k for k, v in fields.items() if v is not None and k not in ("task", "prompt"))
    first = next(i for i, line in enumerate(text, 1) if line.startswith(f"{key}:"))
    return first


def test_the_corpus_is_big_enough() -> None:
    assert len(BAD) >= 25


def test_an_unknown_model_far_from_any_known_one_is_a_warning(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "data" / "in.jsonl", RECORDS)
    result = cli("validate", str(write_spec(tmp_path, model="gemini-9-ultra-preview")))
    assert result.exit_code == 0, result.output
    assert "model not in batchflow's table" in result.stderr


def test_a_bad_templated_value_is_an_error_at_the_record(tmp_path: Path) -> None:
    """What only a record decides (a templated temperature) is checked per record: the record's place, key, the
    spec's field, and what is allowed; skip makes it an error row."""
    write_jsonl(tmp_path / "data" / "in.jsonl", [{"id": "a", "text": "x", "t": 0.5}, {"id": "b", "text": "y",
                                                                                       "t": "hot"}])
    path = write_spec(tmp_path, generation_config={"temperature": "{{ t }}"})
    result = cli("run", str(path))
    assert result.exit_code == 2
    assert "in.jsonl:2: record 2 (key 'b'): " in result.stderr
    assert "generation_config.temperature: expected a number, got 'hot'" in result.stderr
    spec = yaml.safe_load(path.read_text())
    spec["source"]["on_bad_record"] = "skip"
    path.write_text(yaml.safe_dump(spec))
    assert cli("run", str(path)).exit_code == 0
    rows = read_rows(tmp_path / "out" / "result.jsonl")
    assert [r["status"] for r in rows] == ["ok", "error"]
    assert "expected a number, got 'hot'" in rows[1]["error"]["message"]


def test_a_prompt_over_the_models_input_limit_is_an_error_row_never_sent(tmp_path: Path) -> None:
    huge = "word " * 1_100_000  # ~5.5 MB: over gemini-2.5-flash's 1,048,576 tokens at four bytes a token
    write_jsonl(tmp_path / "data" / "in.jsonl", [{"id": "a", "text": "fine"}, {"id": "big", "text": huge}])
    path = write_spec(tmp_path)
    validated = cli("validate", str(path))
    assert validated.exit_code == 0
    assert "key 'big': the prompt is about 1,375,0" in validated.output
    planned = cli("plan", str(path))
    assert "rejected: record 2: " in planned.output and "over gemini-2.5-flash's input limit" in planned.output
    assert cli("run", str(path)).exit_code == 1  # it failed, and output.max_failed is 0
    rows = read_rows(tmp_path / "out" / "result.jsonl")
    assert [(r["key"], r["status"]) for r in rows] == [("a", "ok"), ("big", "error")]
    assert "input limit of 1,048,576; not sent" in rows[1]["error"]["message"]
    sent = (tmp_path / ".batchflow" / "t" / "gen-1" / "units")
    assert not sent.exists() or b"word word" not in b"".join(p.read_bytes() for p in sent.iterdir())


@pytest.mark.parametrize(("model", "message"), [
    ("gemini-2.0-flash-live-001", "does not run generate batch jobs (the service lists its methods as"),
    ("gemini-9-ultra", "the service does not know model 'gemini-9-ultra' (models.get: 404 NOT_FOUND)"),
    ("gemini-2.5-flash", None),
])
def test_plan_asks_the_service_about_the_model(tmp_path: Path, emulator_url: str, model: str, message: str | None,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BF_TEST_KEY", "test")
    write_jsonl(tmp_path / "data" / "in.jsonl", RECORDS)
    path = write_spec(tmp_path, model=model, backend={"type": "gemini", "base_url": emulator_url,
                                                      "api_key_env": "BF_TEST_KEY"})
    result = cli("plan", str(path))
    if message is None:
        assert result.exit_code == 0, result.stderr
        return
    assert result.exit_code == 2
    assert f"{path}:7:8: model: " in result.stderr and message in result.stderr  # where the spec names it
