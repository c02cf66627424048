"""The emulator's deterministic model, schema sampler and job lifecycle, without HTTP."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchflow.emulator import Emulator
from batchflow.emulator.model.deterministic import embedding, generate
from batchflow.emulator.model.schema_values import sample
from batchflow.emulator.wire.errors import ApiError

_scalar = st.one_of(
    st.just({"type": "string"}),
    st.just({"type": "boolean"}),
    st.lists(st.text(min_size=1, max_size=5), min_size=1, max_size=4, unique=True).map(
        lambda xs: {"type": "string", "enum": xs}),
    st.tuples(st.integers(-50, 50), st.integers(0, 50)).map(
        lambda t: {"type": "integer", "minimum": t[0], "maximum": t[0] + t[1]}),
    st.tuples(st.floats(-10, 10), st.floats(0, 10)).map(
        lambda t: {"type": "number", "minimum": t[0], "maximum": t[0] + t[1]}),
)


def _compound(children: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    objects = st.dictionaries(st.text("abcdefgh", min_size=1, max_size=4), children, max_size=4).flatmap(
        lambda props: st.sets(st.sampled_from(sorted(props)) if props else st.nothing()).map(
            lambda req: {"type": "object", "properties": props, "required": sorted(req)}))
    arrays = children.map(lambda item: {"type": "array", "items": item})
    return st.one_of(objects, arrays)


schemas = st.recursive(_scalar, _compound, max_leaves=12)


def _gemini_dialect(node: Any) -> Any:
    """The same schema in Gemini's Schema dialect (upper-case types)."""
    if isinstance(node, dict):
        return {k: (v.upper() if k == "type" else _gemini_dialect(v)) for k, v in node.items()}
    if isinstance(node, list):
        return [_gemini_dialect(v) for v in node]
    return node


@settings(max_examples=150, deadline=None)
@given(schema=schemas, seed=st.binary(min_size=1, max_size=8))
def test_sampled_values_satisfy_json_schema_and_gemini_schema(schema: dict[str, Any], seed: bytes) -> None:
    value = sample(schema, seed)
    jsonschema.validate(value, schema)
    assert sample(_gemini_dialect(schema), seed) == value


def test_json_schema_refs_and_type_lists_are_followed() -> None:
    schema = {"$defs": {"item": {"type": "object", "properties": {"id": {"type": "integer"}},
                                 "required": ["id"]}},
              "type": "object", "properties": {"items": {"type": "array", "items": {"$ref": "#/$defs/item"}},
                                               "note": {"type": ["string", "null"]},
                                               "kind": {"const": "fixed"}},
              "required": ["items", "note", "kind"]}
    jsonschema.validate(sample(schema, b"s"), schema)


@settings(max_examples=100, deadline=None)
@given(text=st.text(max_size=200), dims=st.integers(1, 3072))
def test_embeddings_are_unit_vectors_of_the_asked_dimension(text: str, dims: int) -> None:
    values = embedding(text, dims)
    assert len(values) == dims
    assert math.isclose(math.fsum(v * v for v in values), 1.0, abs_tol=1e-5)
    assert embedding(text, dims) == values


def test_embeddings_of_texts_sharing_words_are_closer() -> None:
    a, b, c = (embedding(t, 256) for t in ("red apple pie", "red apple tart", "quantum tax law"))
    assert sum(x * y for x, y in zip(a, b, strict=True)) > sum(x * y for x, y in zip(a, c, strict=True))


def test_generate_echoes_the_prompt_and_counts_tokens() -> None:
    request = {"contents": [{"role": "user", "parts": [{"text": "Tell me about otters"}]}]}
    response = generate(request, "models/gemini-2.5-flash")
    text = response["candidates"][0]["content"]["parts"][0]["text"]
    assert "Tell me about otters" in text and response == generate(request, "models/gemini-2.5-flash")
    usage = response["usageMetadata"]
    assert usage["promptTokenCount"] >= 1 and usage["totalTokenCount"] == usage["promptTokenCount"] + usage[
        "candidatesTokenCount"]


@pytest.mark.parametrize("request_", [
    None, {}, {"contents": []}, {"contents": {"parts": []}}, {"contents": [{"parts": []}]},
    {"contents": [{"role": "robot", "parts": [{"text": "x"}]}]},
    {"contents": [{"parts": [{"text": 5}]}]},
])
def test_malformed_generate_requests_are_invalid_argument(request_: Any) -> None:
    with pytest.raises(ApiError) as info:
        generate(request_, "models/gemini-2.5-flash")
    assert info.value.code == 400 and info.value.status == "INVALID_ARGUMENT"


def test_job_moves_pending_running_succeeded_over_job_seconds(tmp_path: Path) -> None:
    now = [1_000.0]
    engine = Emulator(tmp_path, job_seconds=10, clock=lambda: now[0])
    body = {"batch": {"inputConfig": {"requests": {"requests": [
        {"request": {"contents": [{"parts": [{"text": "hi"}]}]}}]}}}}
    try:
        job_id = engine.create_batch("generate", "m", body)["name"].removeprefix("batches/")
        seen = []
        for step in (0.0, 3.0, 9.0, 10.0):
            now[0] = 1_000.0 + step
            seen.append(engine.get_batch(job_id)["metadata"]["state"])
        assert seen == ["BATCH_STATE_PENDING", "BATCH_STATE_RUNNING", "BATCH_STATE_RUNNING",
                        "BATCH_STATE_SUCCEEDED"]
        assert engine.get_batch(job_id)["done"] is True
    finally:
        engine.close()
