"""Request checks with the real API's verdicts: a malformed request is a 400 INVALID_ARGUMENT.

Proto-JSON parsing accepts both the camelCase JSON name and the snake_case proto name of every field, so
every read goes through `field`.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any

from batchflow.emulator.errors import invalid_argument

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


def check_generate_request(request: Any, *, semantic: bool = True) -> None:
    """Raise ApiError(400) unless `request` is a usable GenerateContentRequest.

    With `semantic=False` only what proto-JSON parsing itself rejects (wrong types) is checked: that is what
    the real API refuses synchronously when a batch is created; the rest fails per request when it runs.
    """
    if not isinstance(request, Mapping):
        raise invalid_argument("GenerateContentRequest must be a JSON object")
    contents = field(request, "contents")
    if semantic and (contents is None or contents == []):
        raise invalid_argument("* GenerateContentRequest.contents: contents is not specified")
    if contents is not None and not isinstance(contents, list):
        raise invalid_argument(f"Invalid value at 'contents': expected a list of Content, got {_kind(contents)}")
    for i, content in enumerate(contents or ()):
        _check_content(content, f"contents[{i}]", semantic)
    system = field(request, "systemInstruction")
    if system is not None:
        _check_content(system, "system_instruction", semantic)
    config = field(request, "generationConfig")
    if config is not None and not isinstance(config, Mapping):
        raise invalid_argument(f"Invalid value at 'generation_config': expected an object, got {_kind(config)}")
    for name in _LIST_FIELDS:
        value = field(request, name)
        if value is not None and not isinstance(value, list):
            raise invalid_argument(f"Invalid value at '{snake(name)}': expected a list, got {_kind(value)}")


def check_embed_request(request: Any, *, semantic: bool = True) -> None:
    """Raise ApiError(400) unless `request` is a usable EmbedContentRequest (`semantic` as above)."""
    if not isinstance(request, Mapping):
        raise invalid_argument("EmbedContentRequest must be a JSON object")
    content = field(request, "content")
    if content is None and semantic:
        raise invalid_argument("* EmbedContentRequest.content: content is not specified")
    if content is not None:
        _check_content(content, "content", semantic)
    if semantic and not any(t.strip() for t in text_of(content)):
        raise invalid_argument("* EmbedContentRequest.content: text is empty")
    dims = field(request, "outputDimensionality")
    if dims is not None and (isinstance(dims, bool) or not isinstance(dims, int)
                             or not 1 <= dims <= _MAX_EMBED_DIMENSIONS):
        raise invalid_argument(f"output_dimensionality must be an integer in 1..{_MAX_EMBED_DIMENSIONS}")
    task = field(request, "taskType")
    if task is not None and task not in _TASK_TYPES:
        raise invalid_argument(f"Invalid value at 'task_type': {task!r}")


def _check_content(content: Any, where: str, semantic: bool) -> None:
    if not isinstance(content, Mapping):
        raise invalid_argument(f"Invalid value at '{where}': expected a Content object, got {_kind(content)}")
    role = content.get("role", "")
    if not isinstance(role, str) or (semantic and role not in _ROLES):
        raise invalid_argument(f"Please use a valid role: user, model. (at '{where}.role': {role!r})")
    parts = field(content, "parts")
    if parts is not None and not isinstance(parts, list):
        raise invalid_argument(f"Invalid value at '{where}.parts': expected a list, got {_kind(parts)}")
    if semantic and not parts:
        raise invalid_argument(f"* GenerateContentRequest.{where}.parts: contents.parts must not be empty.")
    for j, part in enumerate(parts or ()):
        if not isinstance(part, Mapping) or (semantic and not part):
            raise invalid_argument(f"Invalid value at '{where}.parts[{j}]': expected a non-empty Part object")
        text = part.get("text")
        if text is not None and not isinstance(text, str):
            raise invalid_argument(f"Invalid value at '{where}.parts[{j}].text': expected a string")


def _kind(value: Any) -> str:
    return type(value).__name__
