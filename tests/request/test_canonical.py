"""Canonical request JSON: the plain-JSON walk gives what google-genai's types give, and ignores what an echo adds."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from batchflow.request.canonical import canonical, canonical_request
from batchflow.request.wire import RequestBuilder

SCHEMA = {"type": "object", "properties": {"first_name": {"type": "string"}, "scoreValue": {"type": "integer"},
                                           "tags": {"type": "array", "items": {"type": "string"}}},
          "required": ["first_name"]}
TOOLS = [{"function_declarations": [{"name": "lookup", "description": "find a user", "parameters": {
    "type": "object", "properties": {"user_id": {"type": "integer"}}, "required": ["user_id"]}}]}]
TEXT = [{"role": "user", "parts": [{"text": "hi"}]}]
# Requests as a spec writes them; RequestBuilder makes them what batchflow stages (the SDK's wire form).
CORPUS: list[dict[str, Any]] = [
    {"contents": TEXT},
    {"contents": [{"parts": [{"text": "no role"}, {"text": "two parts"}]}]},
    {"contents": [{"role": "user", "parts": [{"text": "see"}, {"file_data": {
        "file_uri": "gs://b/desk.jpeg", "mime_type": "image/jpeg"}}]}],
     "generation_config": {"temperature": 1, "top_p": 0.9, "max_output_tokens": 64, "stop_sequences": ["END"],
                           "response_mime_type": "application/json", "response_schema": SCHEMA,
                           "thinking_config": {"thinking_budget": 0}},
     "labels": {"cost_center": "research"}},
    {"contents": [{"role": "user", "parts": [{"inline_data": {"data": "aGVsbG8/Pz8+", "mime_type": "image/png"}}]},
                  {"role": "model", "parts": [{"function_call": {"name": "lookup",
                                                                 "args": {"user_id": 1.0, "note": None}}}]},
                  {"role": "user", "parts": [{"function_response": {"name": "lookup",
                                                                    "response": {"found_it": [1, 2.5]}}}]}],
     "system_instruction": {"parts": [{"text": "be brief"}]}, "tools": TOOLS,
     "tool_config": {"function_calling_config": {"mode": "AUTO"}},
     "safety_settings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_ONLY_HIGH"}]},
    {"contents": TEXT, "generationConfig": {"responseMimeType": "application/json", "responseJsonSchema": {
        "type": "object", "properties": {"a_b": {"type": "string", "default": None}}}}},
    {"contents": TEXT, "generation_config": {"candidate_count": 2, "seed": 7, "presence_penalty": 0.5,
                                             "response_modalities": ["TEXT"],
                                             "media_resolution": "MEDIA_RESOLUTION_LOW"}},
]
_TYPES = {"contents": "Content", "systemInstruction": "Content", "tools": "Tool", "toolConfig": "ToolConfig",
          "safetySettings": "SafetySetting", "generationConfig": "GenerationConfig"}


def _wire(request: dict[str, Any]) -> dict[str, Any]:
    wire: dict[str, Any] = orjson.loads(orjson.dumps(RequestBuilder("vertex", "generate", "gemini-2.5-flash")
                                                     .build(request)))
    return wire


def _through_types(wire: dict[str, Any], **dump: bool) -> dict[str, Any]:
    """Each member read by its google-genai type (from JSON, as the SDK reads a response) and dumped again."""
    from google.genai import types

    def one(name: str, value: Any) -> Any:
        model = getattr(types, _TYPES[name]).model_validate_json(orjson.dumps(value))
        return model.model_dump(mode="json", **dump)

    return {name: ([one(name, v) for v in value] if isinstance(value, list) else one(name, value))
            if name in _TYPES else value for name, value in wire.items()}


def _json(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def _numbers(value: Any) -> Any:
    """Integral floats as integers: the one liberty the canonical form takes beyond the types (1 and 1.0 alike)."""
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    return int(value) if isinstance(value, float) and value.is_integer() else value


@pytest.mark.parametrize("request_", CORPUS)
def test_the_walk_equals_the_pydantic_round_trip(request_: dict[str, Any]) -> None:
    wire = _wire(request_)
    assert _json(canonical_request(wire)) == _json(_numbers(_through_types(wire, by_alias=True, exclude_none=True)))


@pytest.mark.parametrize("request_", CORPUS)
def test_an_echo_with_nulls_and_snake_case_is_the_same_request(request_: dict[str, Any]) -> None:
    wire = _wire(request_)
    echo = _through_types(wire, by_alias=False, exclude_none=False)  # every unset field null, snake_case
    assert b"null" in _json(echo) and echo != wire
    assert _json(canonical_request(echo)) == _json(canonical_request(wire))


def test_the_notebooks_echo_matches_what_was_sent() -> None:
    """Google's intro_batch_prediction notebook: sent, and echoed in its "Example output"."""
    sent = {"contents": [{"role": "user", "parts": [{"text": "List objects in this image."}, {"file_data": {
        "file_uri": "gs://cloud-samples-data/generative-ai/image/office-desk.jpeg", "mime_type": "image/jpeg"}}]}],
        "generationConfig": {"temperature": 0.4}}
    echo = {"contents": [{"parts": [{"file_data": None, "text": "List objects in this image."}, {"file_data": {
        "file_uri": "gs://cloud-samples-data/generative-ai/image/office-desk.jpeg", "mime_type": "image/jpeg"},
        "text": None}], "role": "user"}], "generationConfig": {"temperature": 0.4}}
    assert canonical_request(echo) == canonical_request(sent)


def test_names_inside_free_form_values_and_schema_properties_keep_their_spelling() -> None:
    def call(args: dict[str, Any]) -> dict[str, Any]:
        return {"contents": [{"role": "model", "parts": [{"functionCall": {"name": "f", "args": args}}]}]}

    assert canonical_request(call({"user_id": 1})) != canonical_request(call({"userId": 1}))
    assert canonical_request(call({"a": None})) != canonical_request(call({}))  # a null argument is an argument

    def schema(name: str) -> dict[str, Any]:
        return {"contents": TEXT, "generationConfig": {"responseSchema": {"type": "OBJECT", "properties": {
            name: {"type": "STRING", "description": None}}}}}

    assert canonical_request(schema("first_name"))["generationConfig"]["responseSchema"]["properties"] == {
        "first_name": {"type": "STRING"}}
    assert canonical_request(schema("first_name")) != canonical_request(schema("firstName"))
    assert canonical_request({"contents": TEXT, "labels": {"cost_center": "a"}})["labels"] == {"cost_center": "a"}


def test_bytes_compare_by_value_whatever_the_base64_alphabet() -> None:
    def image(data: str) -> dict[str, Any]:
        return {"contents": [{"role": "user", "parts": [{"inlineData": {"mimeType": "image/png", "data": data}}]}]}

    assert canonical_request(image("aGVsbG8/Pz8+")) == canonical_request(image("aGVsbG8_Pz8-"))
    assert canonical_request(image("aGk=")) == canonical_request(image("aGk"))
    assert canonical_request(image("aGk=")) != canonical_request(image("aGVsbG8="))


def test_an_instance_is_canonical_by_the_generic_rule() -> None:
    assert canonical({"content": "x", "task_type": "CLUSTERING", "title": None, "n": 2.0}) == {
        "content": "x", "taskType": "CLUSTERING", "n": 2}
