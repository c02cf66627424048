"""Request checks with the real API's verdicts: a request that makes no sense is a 400 INVALID_ARGUMENT.

These are the checks a schema cannot express (roles, empty contents, dimension limits); they run after a line has
parsed against Google's schemas (`proto_json`), and keep `model` safe when it is called directly. Proto-JSON
parsing accepts both the camelCase JSON name and the snake_case proto name of every field, so
every read goes through `field`.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any

from batchflow.emulator.wire.errors import invalid_argument

_ROLES = frozenset({"", "user", "model", "function", "tool", "system"})
_LIST_FIELDS = ("tools", "safetySettings")
_MAX_EMBED_DIMENSIONS = 3072
_TASK_TYPES = frozenset({"TASK_TYPE_UNSPECIFIED", "RETRIEVAL_QUERY", "RETRIEVAL_DOCUMENT", "SEMANTIC_SIMILARITY",
                         "CLASSIFICATION", "CLUSTERING", "QUESTION_ANSWERING", "FACT_VERIFICATION",
                         "CODE_RETRIEVAL_QUERY"})


@cache
def snake(camel: str) -> str:
    """`generationConfig` -> `generation_config`."""
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in camel)


def field(obj: Any, camel: str) -> Any:
    """A proto-JSON field by either of its names; None when absent or when `obj` is not an object."""
    if not isinstance(obj, Mapping):
        return None
    value = obj.get(camel)
    return obj.get(snake(camel)) if value is None else value


def text_of(content: Any) -> list[str]:
    """The text parts of a Content (empty for anything else)."""
    parts = field(content, "parts")
    if not isinstance(parts, list):
        return []
    return [p["text"] for p in parts if isinstance(p, Mapping) and isinstance(p.get("text"), str)]


def check_generate_request(request: Any) -> None:
    """Raise ApiError(400) unless `request` is a usable GenerateContentRequest."""
    if not isinstance(request, Mapping):
        raise invalid_argument("GenerateContentRequest must be a JSON object")
    contents = field(request, "contents")
    if contents is None or contents == []:
        raise invalid_argument("* GenerateContentRequest.contents: contents is not specified")
    if contents is not None and not isinstance(contents, list):
        raise invalid_argument(f"Invalid value at 'contents': expected a list of Content, got {_kind(contents)}")
    for i, content in enumerate(contents or ()):
        _check_content(content, f"contents[{i}]")
    system = field(request, "systemInstruction")
    if system is not None:
        _check_content(system, "system_instruction")
    config = field(request, "generationConfig")
    if config is not None and not isinstance(config, Mapping):
        raise invalid_argument(f"Invalid value at 'generation_config': expected an object, got {_kind(config)}")
    for name in _LIST_FIELDS:
        value = field(request, name)
        if value is not None and not isinstance(value, list):
            raise invalid_argument(f"Invalid value at '{snake(name)}': expected a list, got {_kind(value)}")


def check_embed_request(request: Any) -> None:
    """Raise ApiError(400) unless `request` is a usable EmbedContentRequest."""
    if not isinstance(request, Mapping):
        raise invalid_argument("EmbedContentRequest must be a JSON object")
    content = field(request, "content")
    if content is None:
        raise invalid_argument("* EmbedContentRequest.content: content is not specified")
    _check_content(content, "content")
    if not any(t.strip() for t in text_of(content)) and not _has_other_part(content):
        raise invalid_argument("* EmbedContentRequest.content: text is empty")
    dims = field(request, "outputDimensionality")
    if dims is not None and not 1 <= _integer(dims) <= _MAX_EMBED_DIMENSIONS:
        raise invalid_argument(f"output_dimensionality must be an integer in 1..{_MAX_EMBED_DIMENSIONS}")
    task = field(request, "taskType")
    if task is not None and task not in _TASK_TYPES:
        raise invalid_argument(f"Invalid value at 'task_type': {task!r}")


def check_dimensions(dims: Any, sizes: tuple[int, int, int], model_id: str) -> None:
    """Raise ApiError(400) unless ``dims`` (an ``outputDimensionality``, or None) is within the model's sizes
    (``models.Embedding.dimensions``: 128..3072 for the Gemini embedding models, on the Gemini API as on Vertex)."""
    low, high, _ = sizes
    if dims is not None and not low <= _integer(dims) <= high:
        raise invalid_argument(f"output_dimensionality must be in {low}..{high} for {model_id}, got {dims}")


def _has_other_part(content: Any) -> bool:
    """Whether a content holds a part besides text (media, for a multimodal embedding model to read)."""
    parts = field(content, "parts")
    return isinstance(parts, list) and any(isinstance(p, Mapping) and "text" not in p for p in parts)


def _check_content(content: Any, where: str) -> None:
    if not isinstance(content, Mapping):
        raise invalid_argument(f"Invalid value at '{where}': expected a Content object, got {_kind(content)}")
    role = content.get("role", "")
    if not isinstance(role, str) or role not in _ROLES:
        raise invalid_argument(f"Please use a valid role: user, model. (at '{where}.role': {role!r})")
    parts = field(content, "parts")
    if parts is not None and not isinstance(parts, list):
        raise invalid_argument(f"Invalid value at '{where}.parts': expected a list, got {_kind(parts)}")
    if not parts:
        raise invalid_argument(f"* GenerateContentRequest.{where}.parts: contents.parts must not be empty.")
    for j, part in enumerate(parts or ()):
        if not isinstance(part, Mapping) or not part:
            raise invalid_argument(f"Invalid value at '{where}.parts[{j}]': expected a non-empty Part object")
        text = part.get("text")
        if text is not None and not isinstance(text, str):
            raise invalid_argument(f"Invalid value at '{where}.parts[{j}].text': expected a string")


def _integer(value: Any) -> int:
    """An int32 as proto-JSON writes it (a number or a decimal string); -1 for anything else."""
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return value if isinstance(value, int) and not isinstance(value, bool) else -1


def _kind(value: Any) -> str:
    return type(value).__name__
