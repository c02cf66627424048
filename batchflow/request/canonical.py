"""Canonical request JSON: one spelling of a request, whatever the service did to it when it echoed it.

Vertex echoes each request of a batch job re-serialised: Google's intro_batch_prediction notebook shows parts sent
as ``{"text": …}`` coming back as ``{"file_data": null, "text": …}``
(https://github.com/GoogleCloudPlatform/generative-ai/blob/main/gemini/batch-prediction/intro_batch_prediction.ipynb,
"Example output"). So a request is matched by the digest of its canonical form: what google-genai's pydantic types
make of it, dumped with ``exclude_none=True`` in camelCase with sorted keys. Parsing a million echoed lines into
those types would cost ~0.5 ms each, so the same result is reached by a walk over plain JSON: null members dropped,
keys spelled in camelCase, except inside free-form maps (``labels``, ``functionCall.args``, a JSON schema), which
stay as written; a map of schemas (``properties``) keeps its names and canonicalises its values; bytes are
re-encoded as pydantic writes them (URL-safe base64); a float with an integral value is written as an integer (the
types make ``temperature: 1`` a float, a proto echo may write it either way). Which field is which comes from the
google-genai types themselves (``_message``), read once. tests/request/test_canonical.py checks the walk against the
pydantic round trip.
"""

from __future__ import annotations

import base64
import binascii
import functools
import typing
from dataclasses import dataclass
from typing import Any

import orjson

from batchflow.request.wire import camel

_FREE = "free"  # a free-form value (Any, dict[str, Any]): keys kept as written, nulls kept
_BYTES = "bytes"  # base64 text


@dataclass(frozen=True)
class _Map:
    """A map from free names to messages: ``Schema.properties``."""

    of: dict[str, Any]


Node = dict[str, Any] | _Map | str | None  # a message's fields by camelCase name | a map | _FREE | _BYTES | scalar
_MEMO = 1024  # canonical forms of non-contents members remembered (a job has a handful of distinct ones)
_memo: dict[tuple[str, bytes], Any] = {}


def canonical_request(request: dict[str, Any]) -> dict[str, Any]:
    """A GenerateContentRequest (either spelling, nulls or not) in its canonical form. The result shares parts with
    other results: read-only."""
    fields = _request_fields()
    out: dict[str, Any] = {}
    for key, value in request.items():
        if value is None:
            continue
        name = camel(key)
        if name == "contents":  # what differs from line to line is walked every time
            out[name] = value if _plain_contents(value) else _walk(value, fields[name])
            continue
        if name == "labels":
            out[name] = _free(value)
            continue
        memo_key = (name, orjson.dumps(value))
        found = _memo.get(memo_key)
        if found is None:
            if len(_memo) >= _MEMO:
                _memo.clear()
            found = _memo[memo_key] = _walk(value, fields.get(name))
        out[name] = found
    return out


def canonical(value: Any) -> Any:
    """Any JSON value by the generic rule: nulls dropped, keys in camelCase, integral floats as integers."""
    return _walk(value, None)


def _plain_contents(contents: Any) -> bool:
    """Text parts only, with nothing to drop or respell: canonical as they are (most requests; ~5x faster)."""
    if type(contents) is not list:
        return False
    for content in contents:
        if type(content) is not dict or not content.keys() <= _CONTENT_KEYS or type(content.get("role", "")) is not str:
            return False
        parts = content.get("parts")
        if type(parts) is not list or not all(type(p) is dict and p.keys() == _TEXT_KEYS and type(p["text"]) is str
                                              for p in parts):
            return False
    return True


_CONTENT_KEYS = frozenset({"role", "parts"})
_TEXT_KEYS = frozenset({"text"})


def _walk(value: Any, node: Node) -> Any:
    kind = type(value)
    if kind is dict:
        if node is _FREE:
            return {k: _free(v) for k, v in value.items()}
        if isinstance(node, _Map):
            return {k: _walk(v, node.of) for k, v in value.items() if v is not None}
        fields = node if isinstance(node, dict) else {}
        return {camel(k): _walk(v, fields.get(camel(k))) for k, v in value.items() if v is not None}
    if kind is list:
        return [_walk(item, node) for item in value]
    if kind is float:
        return int(value) if value.is_integer() else value
    if kind is str and node is _BYTES:
        return _rebase64(value)
    return value


def _free(value: Any) -> Any:
    """A free-form value: only its numbers are made canonical."""
    kind = type(value)
    if kind is dict:
        return {k: _free(v) for k, v in value.items()}
    if kind is list:
        return [_free(item) for item in value]
    if kind is float:
        return int(value) if value.is_integer() else value
    return value


def _rebase64(text: str) -> str:
    """Base64 in either alphabet, padded or not -> URL-safe and padded, as google-genai's types write bytes."""
    try:
        raw = base64.urlsafe_b64decode(text.translate(_TO_URLSAFE) + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return text  # not base64: the service would refuse it; compared as written
    return base64.urlsafe_b64encode(raw).decode()


_TO_URLSAFE = str.maketrans("+/", "-_")


@functools.cache
def _request_fields() -> dict[str, Node]:
    """The REST GenerateContentRequest's fields, each as the google-genai type that reads it."""
    from google.genai import types

    return {"contents": _message(types.Content), "systemInstruction": _message(types.Content),
            "tools": _message(types.Tool), "toolConfig": _message(types.ToolConfig),
            "safetySettings": _message(types.SafetySetting), "generationConfig": _message(types.GenerationConfig),
            "cachedContent": None, "labels": _FREE}


_messages: dict[type, dict[str, Node]] = {}


def _message(model: type) -> dict[str, Node]:
    """A pydantic model's fields by camelCase name, each as the node that reads it (recursive types share)."""
    found = _messages.get(model)
    if found is None:
        found = _messages[model] = {}
        for name, field in model.model_fields.items():  # type: ignore[attr-defined]
            found[camel(name)] = _node(field.annotation)
    return found


def _node(annotation: Any) -> Node:
    """What a field's annotation (``Optional[list[Part]]``, ``dict[str, Schema]``, ``Any`` …) reads."""
    import pydantic

    if annotation is Any:
        return _FREE
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is dict:
        value = args[1] if len(args) == 2 else Any
        inner = _node(value)
        return _Map(inner) if isinstance(inner, dict) else _FREE
    if args:  # Optional, Union, list: the first member that says more than "a scalar"
        return next((n for n in map(_node, args) if n is not None), None)
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return _message(annotation)
    return _BYTES if annotation is bytes else None
