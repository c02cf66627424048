"""Request lines checked against Google's own schemas, as the services' proto-JSON parsers check them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from support.emulator_helpers import http_json

from batchflow.emulator import start_in_thread
from batchflow.emulator.gemini.execute import run_lines
from batchflow.emulator.vertex.execute import answer_line
from batchflow.emulator.wire import proto_json
from batchflow.emulator.wire.errors import ApiError

TEXT = [{"role": "user", "parts": [{"text": "hello"}]}]
OBJECT_SCHEMA = {"type": "OBJECT", "properties": {"a": {"type": "STRING"}}, "required": ["a"]}


def _refusal(request: Any, surface: str = "gemini", task: str = "generate") -> str:
    with pytest.raises(ApiError) as caught:
        proto_json.check(surface, task, request, "request")
    assert caught.value.code == 400 and caught.value.status == "INVALID_ARGUMENT"
    return caught.value.message


BAD_LINES: list[tuple[str, dict[str, Any], str]] = [
    ("unknown field in generation config (camel)", {"contents": TEXT, "generationConfig": {"topp": 0.5}},
     'Invalid JSON payload received. Unknown name "topp" at \'request.generation_config\': Cannot find field.'),
    ("unknown field in generation config (snake)", {"contents": TEXT, "generation_config": {"top_q": 0.5}},
     'Unknown name "top_q" at \'request.generation_config\': Cannot find field.'),
    ("unknown top-level field", {"contents": TEXT, "generationConfg": {}},
     'Unknown name "generationConfg" at \'request\': Cannot find field.'),
    ("float given a word", {"contents": TEXT, "generationConfig": {"temperature": "zero"}},
     "Invalid value at 'request.generation_config.temperature' (TYPE_FLOAT), \"zero\""),
    ("int32 given a fraction", {"contents": TEXT, "generationConfig": {"maxOutputTokens": 1.5}},
     "Invalid value at 'request.generation_config.max_output_tokens' (TYPE_INT32), 1.5"),
    ("bool given a string", {"contents": TEXT, "generationConfig": {"responseLogprobs": "yes"}},
     "(TYPE_BOOL), \"yes\""),
    ("lower-case schema type", {"contents": TEXT, "generationConfig": {
        "responseMimeType": "application/json", "responseSchema": {"type": "object"}}},
     "Invalid value at 'request.generation_config.response_schema.type' (TYPE_ENUM), \"object\""),
    ("lower-case type deep in a schema", {"contents": TEXT, "generation_config": {"response_schema": {
        "type": "OBJECT", "properties": {"a": {"type": "ARRAY", "items": {"type": "string"}}}}}},
     "'request.generation_config.response_schema.properties[\"a\"].items.type' (TYPE_ENUM), \"string\""),
    ("unknown harm category", {"contents": TEXT, "safetySettings": [
        {"category": "HARM_CATEGORY_RUDENESS", "threshold": "BLOCK_NONE"}]},
     "Invalid value at 'request.safety_settings[0].category' (TYPE_ENUM), \"HARM_CATEGORY_RUDENESS\""),
    ("lower-case threshold", {"contents": TEXT, "safety_settings": [
        {"category": "HARM_CATEGORY_HARASSMENT", "threshold": "block_none"}]},
     "'request.safety_settings[0].threshold' (TYPE_ENUM), \"block_none\""),
    ("unknown field in a tool", {"contents": TEXT, "tools": [{"googleSearch": {}, "calculator": {}}]},
     'Unknown name "calculator" at \'request.tools[0]\': Cannot find field.'),
    ("bad type in a function declaration", {"contents": TEXT, "tools": [{"functionDeclarations": [
        {"name": "f", "parameters": {"type": "object"}}]}]},
     "'request.tools[0].function_declarations[0].parameters.type' (TYPE_ENUM), \"object\""),
    ("unknown field in a part", {"contents": [{"role": "user", "parts": [{"txt": "hi"}]}]},
     'Unknown name "txt" at \'request.contents[0].parts[0]\': Cannot find field.'),
    ("number as text", {"contents": [{"role": "user", "parts": [{"text": 5}]}]},
     "Invalid value at 'request.contents[0].parts[0].text' (TYPE_STRING), 5"),
    ("object as text", {"contents": [{"role": "user", "parts": [{"text": {"value": "hi"}}]}]},
     'Unknown name "text" at \'request.contents[0].parts[0]\': Starting an object on a scalar field'),
    ("contents not a list", {"contents": {"role": "user", "parts": [{"text": "hi"}]}},
     "Invalid value at 'request.contents' (TYPE_MESSAGE)"),
    ("list for a single message", {"contents": TEXT, "generationConfig": [{"temperature": 1}]},
     'Unknown name "generation_config" at \'request\': Proto field is not repeating, cannot start list.'),
    ("bytes not base64", {"contents": [{"role": "user", "parts": [
        {"inlineData": {"mimeType": "image/png", "data": "not base64!"}}]}]},
     "'request.contents[0].parts[0].inline_data.data' (TYPE_BYTES)"),
    ("int64 given a word", {"contents": TEXT, "generationConfig": {"responseSchema": {
        "type": "ARRAY", "maxItems": "many"}}},
     "'request.generation_config.response_schema.max_items' (TYPE_INT64), \"many\""),
    ("unknown field in a system instruction", {"contents": TEXT, "systemInstruction": {"text": "be brief"}},
     'Unknown name "text" at \'request.system_instruction\': Cannot find field.'),
]


@pytest.mark.parametrize(("request_", "expected"), [(r, e) for _, r, e in BAD_LINES],
                         ids=[name for name, _, _ in BAD_LINES])
def test_a_bad_gemini_line_is_refused_in_the_parsers_words(request_: dict[str, Any], expected: str) -> None:
    assert expected in _refusal(request_)


GOOD_LINES: list[dict[str, Any]] = [
    {"contents": TEXT, "generationConfig": {"temperature": 0.2, "topP": 0.9, "maxOutputTokens": 64,
                                            "responseMimeType": "application/json", "responseSchema": OBJECT_SCHEMA,
                                            "thinkingConfig": {"thinkingBudget": 0}}},
    {"contents": TEXT, "generation_config": {"temperature": 0.2, "top_p": 0.9, "max_output_tokens": "64",
                                             "response_mime_type": "application/json",
                                             "response_schema": OBJECT_SCHEMA,
                                             "thinking_config": {"thinking_budget": 0}}},
    {"contents": TEXT, "systemInstruction": {"parts": [{"text": "be brief"}]},
     "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}],
     "tools": [{"functionDeclarations": [{"name": "f", "parameters": OBJECT_SCHEMA}]}, {"url_context": {}}],
     "toolConfig": {"functionCallingConfig": {"mode": "AUTO"}}},
    {"contents": [{"role": "user", "parts": [{"inline_data": {"mime_type": "image/png", "data": "aGk="}},
                                             {"file_data": {"file_uri": "files/abc", "mime_type": "image/png"}}]}],
     "generation_config": {"response_json_schema": {"type": "object", "anything": ["goes", 1]}},
     "cached_content": None},
    {"contents": TEXT, "generationConfig": {"temperature": "NaN", "seed": 7, "responseModalities": ["TEXT"]}},
]


@pytest.mark.parametrize("request_", GOOD_LINES)
def test_a_good_gemini_line_passes_in_either_spelling(request_: dict[str, Any]) -> None:
    proto_json.check("gemini", "generate", request_, "request")


def test_embed_requests_are_checked_against_embed_content_request() -> None:
    proto_json.check("gemini", "embed", {"content": {"parts": [{"text": "x"}]}, "output_dimensionality": 512,
                                         "taskType": "RETRIEVAL_DOCUMENT", "title": "t"}, "request")
    assert "(TYPE_ENUM), \"retrieval_document\"" in _refusal(
        {"content": {"parts": [{"text": "x"}]}, "task_type": "retrieval_document"}, task="embed")
    assert 'Unknown name "dimensions"' in _refusal({"content": {"parts": [{"text": "x"}]}, "dimensions": 8},
                                                   task="embed")


def test_vertex_lines_use_vertex_schemas() -> None:
    proto_json.check("vertex", "generate", {"contents": TEXT, "labels": {"k": "v"}}, "request")
    assert "Invalid value at 'request.labels[\"k\"]' (TYPE_STRING), 1" in _refusal(
        {"contents": TEXT, "labels": {"k": 1}}, surface="vertex")
    assert "(TYPE_ENUM), \"object\"" in _refusal(
        {"contents": TEXT, "generationConfig": {"responseSchema": {"type": "object"}}}, surface="vertex")


def test_a_gemini_file_job_answers_good_lines_and_fails_bad_ones_alone(tmp_path: Path) -> None:
    lines = [{"key": "good", "request": {"contents": TEXT}},
             {"key": "bad", "request": {"contents": TEXT, "generationConfig": {"topp": 1}}},
             {"key": "good2", "request": {"contents": TEXT, "generation_config": {"top_p": 1}}}]
    source, dest = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text("".join(json.dumps(x) + "\n" for x in lines))
    counts = run_lines("generate", "models/gemini-2.5-flash", source, dest)
    out = {x["key"]: x for x in map(json.loads, dest.read_text().splitlines())}
    assert (counts.succeeded, counts.failed) == (2, 1) and "response" in out["good2"]
    assert out["bad"]["error"] == {"code": 400, "status": "INVALID_ARGUMENT", "message":
                                   'Invalid JSON payload received. Unknown name "topp" at '
                                   "'request.generation_config': Cannot find field."}


def test_a_vertex_line_that_does_not_parse_carries_the_message_in_status() -> None:
    raw = orjson.dumps({"request": {"contents": TEXT, "generationConfig": {"temperature": "zero"}}})
    line, good = answer_line(raw, "gemini-2.5-flash", False, lambda: 0.0)
    assert not good and "response" not in line and line["status"].startswith("Bad Request: ")
    assert "Invalid value at 'request.generation_config.temperature' (TYPE_FLOAT), \\\"zero\\\"" in line["status"]


def test_an_inline_request_that_does_not_parse_refuses_the_create(tmp_path: Path) -> None:
    body = {"batch": {"inputConfig": {"requests": {"requests": [
        {"request": {"contents": TEXT}},
        {"request": {"contents": TEXT, "safetySettings": [{"category": "harassment"}]}}]}}}}
    with start_in_thread(tmp_path / "emu") as emulator:
        status, reply = http_json("POST", f"{emulator.base_url}/v1beta/models/gemini-2.5-flash:batchGenerateContent",
                                  json.dumps(body).encode())
    assert status == 400 and reply["error"]["message"] == (
        "Invalid value at 'batch.input_config.requests.requests[1].request.safety_settings[0].category' "
        "(TYPE_ENUM), \"harassment\"")
