"""Request JSON: every request checked with google-genai's own types and written as the SDK would send it.

batchflow writes request lines itself (a JSONL file per job), so nothing of the SDK's request path runs on them
unless this module runs it: pydantic validation of ``GenerateContentConfig``, ``Content``, ``Schema``, ``Tool``,
``SafetySetting``, ``EmbedContentConfig`` ... (unknown fields, wrong types), and the SDK's converters for the
backend (``models._GenerateContentParameters_to_mldev`` / ``_to_vertex``: camelCase names, upper-case schema
types, ``property_ordering``, system instruction / tools / safety settings moved out of the config, fields one
backend lacks refused). What the SDK lets through but the service refuses is checked here too: enum values the
SDK only warns about, the response MIME types, number ranges, function names, ``responseSchema`` without a JSON
MIME type.

A spec's request is written in the REST shape of ``GenerateContentRequest`` (either spelling), with
``generation_config`` read as the SDK's ``GenerateContentConfig`` (so it may also hold ``system_instruction``,
``safety_settings``, ``tools``, ``tool_config``). Converting a whole request through pydantic costs ~0.2-0.7 ms,
so only what varies is converted per record: plain text contents pass as they are, and everything else of a
request (config, system instruction, tools ...) is converted once per distinct value and remembered.
"""

from __future__ import annotations

import difflib
import functools
import typing
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

import orjson

from batchflow.spec import models

Path = tuple[str | int, ...]

# The REST GenerateContentRequest's fields (both spellings) -> where each goes in the SDK's parameters.
_SLOTS = {
    "contents": "contents",
    "system_instruction": "system_instruction", "systemInstruction": "system_instruction",
    "generation_config": "config", "generationConfig": "config",
    "safety_settings": "safety_settings", "safetySettings": "safety_settings",
    "tools": "tools",
    "tool_config": "tool_config", "toolConfig": "tool_config",
    "cached_content": "cached_content", "cachedContent": "cached_content",
    "labels": "labels",
}
_REQUEST_FIELDS = ("contents", "system_instruction", "generation_config", "safety_settings", "tools", "tool_config",
                   "cached_content", "labels")
# GenerateContentConfig fields that only steer the SDK itself: the service never sees them.
_CLIENT_ONLY = frozenset({"http_options", "httpOptions", "automatic_function_calling", "automaticFunctionCalling",
                          "should_return_http_response", "shouldReturnHttpResponse"})
_MIME_TYPES = ("text/plain", "application/json", "text/x.enum")
_RANGES = {"temperature": (0.0, 2.0), "top_p": (0.0, 1.0), "top_k": (1, None), "candidate_count": (1, 8),
           "max_output_tokens": (1, None), "presence_penalty": (-2.0, 2.0), "frequency_penalty": (-2.0, 2.0),
           "logprobs": (0, 20)}
_MODALITIES = ("TEXT", "IMAGE", "AUDIO")
_TASK_TYPES = ("RETRIEVAL_QUERY", "RETRIEVAL_DOCUMENT", "SEMANTIC_SIMILARITY", "CLASSIFICATION", "CLUSTERING",
               "QUESTION_ANSWERING", "FACT_VERIFICATION", "CODE_RETRIEVAL_QUERY")
_FUNCTION_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
_ROLES = ("user", "model")
_MEMO = 4096  # distinct configs remembered (one, for nearly every spec)


@dataclass(frozen=True)
class Problem:
    path: Path  # within the request as written: ("generation_config", "temperature")
    message: str

    def __str__(self) -> str:
        return f"{dotted(self.path)}: {self.message}" if self.path else self.message


class RequestProblems(ValueError):
    """What is wrong with a request, every problem at its path in the request as written."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(map(str, problems)))
        self.problems = problems


def dotted(path: Path) -> str:
    return ".".join(str(p) for p in path)


def surface(backend: str) -> str:
    """The API a backend speaks: ``vertex``, or ``gemini`` (the Developer API; the local emulator speaks it)."""
    return "vertex" if backend == "vertex" else "gemini"


class RequestBuilder:
    """Requests of one spec (backend, task, model) in the SDK's wire form, checked; one instance per run."""

    def __init__(self, backend: str, task: str, model: str, project: str = "project", location: str = "global"):
        self.vertex = surface(backend) == "vertex"
        self.task = task
        self.model = model
        self._project, self._location = project, location
        self._by_identity: dict[tuple[int, ...], tuple[tuple[Any, ...], dict[str, Any]]] = {}
        self._by_value: dict[bytes, dict[str, Any]] = {}

    def build(self, request: Any) -> dict[str, Any]:
        """The wire form of a rendered request (``task``'s shape); ``RequestProblems`` when the service would
        refuse it. The result may share parts with other requests: read-only."""
        if not isinstance(request, dict):
            raise RequestProblems([Problem((), f"expected the request to be a mapping, got {_kind(request)}")])
        return self._embed(request) if self.task == "embed" else self._generate(request)

    # --- generate ---------------------------------------------------------------------------------------------

    def _generate(self, request: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        rest: list[tuple[str, Any]] = []
        for name, value in request.items():
            slot = _SLOTS.get(name)
            if slot is None:
                raise RequestProblems([_unknown((), name, _REQUEST_FIELDS)])
            if slot == "contents":
                out["contents"] = value if _plain_contents(value) else self._contents(value)
            else:
                rest.append((name, value))
        if rest:
            out.update(self._rest(rest))
        return out

    def _rest(self, rest: list[tuple[str, Any]]) -> dict[str, Any]:
        """Everything but the contents, converted once per distinct value (by identity first: a spec's static
        config is one object shared by every request; then by its JSON)."""
        values = tuple(v for _, v in rest)
        ids = tuple(id(v) for v in values)
        hit = self._by_identity.get(ids)
        if hit is not None and all(a is b for a, b in zip(hit[0], values, strict=True)):
            return hit[1]
        blob = orjson.dumps(rest)
        wire = self._by_value.get(blob)
        if wire is None:
            wire = _converted(self._convert_rest, (self.vertex, self.model, self._project, self._location, blob))
            if len(self._by_value) >= _MEMO:
                self._by_value.clear()
            self._by_value[blob] = wire
        if len(self._by_identity) >= _MEMO:
            self._by_identity.clear()
        self._by_identity[ids] = (values, wire)
        return wire

    def _convert_rest(self, blob: bytes) -> dict[str, Any]:
        rest: list[tuple[str, Any]] = orjson.loads(blob)  # a copy: the SDK's schema step edits what it gets
        config: dict[str, Any] = {}
        origin: dict[str, Path] = {}  # config field -> where the request has it
        problems: list[Problem] = []
        for name, value in rest:
            slot = _SLOTS[name]
            if slot == "config":
                if not isinstance(value, dict):
                    problems.append(Problem((name,), f"expected a mapping, got {_kind(value)}"))
                    continue
                for field, item in value.items():
                    if field in _CLIENT_ONLY:
                        problems.append(Problem((name, field), "a setting of the SDK itself, not of the request"))
                        continue
                    _put(config, origin, _snake(field), item, (name, field), problems)
            elif slot == "labels" and not self.vertex:
                problems.append(Problem((name,), "labels are a Vertex AI field; the Gemini API refuses them"))
            else:
                _put(config, origin, slot, value, (name,), problems)
        if problems:
            raise RequestProblems(problems)
        return self._through_sdk(config, origin)

    def _through_sdk(self, config: dict[str, Any], origin: dict[str, Path]) -> dict[str, Any]:
        types, models, common = _sdk()
        problems = list(_semantic(config, origin))
        schema = config.get("response_schema")
        if isinstance(schema, dict):  # read as the SDK reads it (JSON Schema's spellings made Gemini's first)
            schema = orjson.loads(orjson.dumps(schema))
            _transformers().process_schema(schema, self._client)
            problems += _validated(types.Schema, schema, origin["response_schema"])
        params = _validated_params(types._GenerateContentParameters, {"model": self.model, "config": config},
                                   origin, problems)
        if problems or params is None:
            raise RequestProblems(problems)
        convert = (models._GenerateContentParameters_to_vertex if self.vertex
                   else models._GenerateContentParameters_to_mldev)
        try:
            wire = convert(self._client, params, None, params)
        except ValueError as exc:  # a field the backend does not have (the SDK says which)
            raise RequestProblems([Problem(origin.get("config", ()), str(exc))]) from None
        wire = common.encode_unserializable_types(common.convert_to_dict(wire))
        wire.pop("_url", None)
        wire.pop("config", None)
        plain: dict[str, Any] = orjson.loads(orjson.dumps(wire))  # plain JSON values (the SDK leaves enums)
        return plain

    def _contents(self, contents: Any) -> list[dict[str, Any]]:
        """Contents other than plain text (files, inline data, function calls ...), through the SDK's types."""
        types, models, common = _sdk()
        if not isinstance(contents, list):
            raise RequestProblems([Problem(("contents",), f"expected a list of contents, got {_kind(contents)}")])
        problems: list[Problem] = []
        wire = []
        convert = models._Content_to_vertex if self.vertex else models._Content_to_mldev
        for i, item in enumerate(contents):
            path: Path = ("contents", i)
            if isinstance(item, dict) and item.get("role") not in (None, *_ROLES):
                problems.append(Problem((*path, "role"), f"expected one of {', '.join(_ROLES)}, got "
                                                         f"{_kind(item['role'])}"))
            content, found = _instance(types.Content, orjson.loads(orjson.dumps(item)), path)
            if found:
                problems += found
                continue
            wire.append(orjson.loads(orjson.dumps(common.encode_unserializable_types(
                common.convert_to_dict(convert(content))))))
        if problems:
            raise RequestProblems(problems)
        return wire

    @property
    def _client(self) -> Any:
        return _client(self.vertex, self._project, self._location)

    # --- embed ------------------------------------------------------------------------------------------------

    def _embed(self, request: dict[str, Any]) -> dict[str, Any]:
        """``{"content": Content, task_type, title, output_dimensionality}`` -> EmbedContentRequest's wire form;
        for a model that reads its task from the text (gemini-embedding-2), task type and title as its prefix."""
        content = request.get("content")
        config = {k: v for k, v in request.items() if k != "content"}
        out: dict[str, Any] = {"content": content if _plain_content(content) else self._contents([content])[0]}
        if config:
            out.update(self._embed_config(config))
        if models.embedding_of(self.model).task_in_text and ("taskType" in out or "title" in out):
            out = task_in_text(out)
        return out

    def _embed_config(self, config: dict[str, Any]) -> dict[str, Any]:
        blob = orjson.dumps(config)
        wire = self._by_value.get(blob)
        if wire is None:
            wire = _converted(self._convert_embed_config, (self.vertex, self.model, "embed", "", blob))
            if len(self._by_value) >= _MEMO:
                self._by_value.clear()
            self._by_value[blob] = wire
        return wire

    def _convert_embed_config(self, blob: bytes) -> dict[str, Any]:
        config: dict[str, Any] = orjson.loads(blob)
        types, _, _ = _sdk()
        snake = {_snake(k): v for k, v in config.items()}
        problems = _validated(types.EmbedContentConfig, snake, (), names={_snake(k): k for k in config})
        task_type = snake.get("task_type")
        if task_type is not None and task_type not in _TASK_TYPES:  # a string to the SDK, an enum to the service
            problems.append(Problem((names_of(config, "task_type"),), f"expected one of {', '.join(_TASK_TYPES)}; "
                                    f"got {_kind(task_type)}" + _did_you_mean(str(task_type).upper(), _TASK_TYPES)))
        dims = snake.get("output_dimensionality")
        low, high, _ = models.embedding_of(self.model).dimensions
        if not problems and dims is not None and not low <= int(dims) <= high:
            problems.append(Problem((names_of(config, "output_dimensionality"),),
                                    f"expected {low} to {high} for {models.bare(self.model)}, got {dims}"))
        if snake.get("auto_truncate") is not None and not self.vertex:
            problems.append(Problem((names_of(config, "auto_truncate"),), "auto_truncate is a Vertex AI option; "
                                    "the Gemini API refuses it (a text over the model's input limit is an error row)"))
        if problems:
            raise RequestProblems(problems)
        return {camel(k): (v.value if isinstance(v, Enum) else v)
                for k, v in types.EmbedContentConfig.model_validate(snake).model_dump(exclude_none=True).items()}


# Gemini Embedding 2 reads its task from a prefix of the text, not from a config field (Vertex "Get batch embeddings
# inferences", 2026-12-07: "expects the task type and title to be inlined directly within the prompt"); the prefixes
# are those of Google's embedding-model prompt format ("task: search result | query: ...", "title: ... | text: ...").
_TASK_PREFIXES = {
    "RETRIEVAL_QUERY": "task: search result | query: ",
    "QUESTION_ANSWERING": "task: question answering | query: ",
    "FACT_VERIFICATION": "task: fact checking | query: ",
    "CLASSIFICATION": "task: classification | query: ",
    "CLUSTERING": "task: clustering | query: ",
    "SEMANTIC_SIMILARITY": "task: sentence similarity | query: ",
    "CODE_RETRIEVAL_QUERY": "task: code retrieval | query: ",
}


def task_prefix(task_type: str | None, title: str | None) -> str:
    """The text prefix that says a task type and title to a model that reads them from the text; a title alone
    (or RETRIEVAL_DOCUMENT) is a document's ``title: T | text: ``."""
    if task_type in _TASK_PREFIXES:
        return _TASK_PREFIXES[task_type]
    return f"title: {title or 'none'} | text: "


def task_in_text(request: dict[str, Any]) -> dict[str, Any]:
    """An embed request's ``taskType`` and ``title`` moved into a prefix of its first text part (a new request:
    the given one may share parts with others)."""
    rest = {k: v for k, v in request.items() if k not in ("taskType", "title")}
    prefix = task_prefix(request.get("taskType"), request.get("title"))
    content = request["content"]
    parts = list(content.get("parts") or [])
    first = next((i for i, p in enumerate(parts) if isinstance(p, dict) and isinstance(p.get("text"), str)), None)
    if first is None:
        parts.insert(0, {"text": prefix.rstrip()})
    else:
        parts[first] = {**parts[first], "text": prefix + parts[first]["text"]}
    return {**rest, "content": {**content, "parts": parts}}


# --- checks the SDK does not make ---------------------------------------------------------------------------


def _semantic(config: dict[str, Any], origin: dict[str, Path]) -> Iterator[Problem]:
    """What the service refuses although google-genai's types let it through."""
    mime = config.get("response_mime_type")
    if mime is not None and mime not in _MIME_TYPES:
        yield Problem(origin["response_mime_type"], f"unsupported MIME type {mime!r}; expected one of "
                                                    f"{', '.join(_MIME_TYPES)}" + _did_you_mean(str(mime), _MIME_TYPES))
    for schema in ("response_schema", "response_json_schema"):
        if config.get(schema) is not None and mime not in ("application/json", "text/x.enum"):
            yield Problem(origin[schema], "a response schema needs response_mime_type: application/json "
                                          "(or text/x.enum)")
    for i, modality in enumerate(config.get("response_modalities") or []):
        if modality not in _MODALITIES:  # a list of strings to the SDK; an enum (upper case) to the service
            yield Problem((*origin["response_modalities"], i), f"expected one of {', '.join(_MODALITIES)}; got "
                                                               f"{_kind(modality)}" + _did_you_mean(
                                                                   str(modality).upper(), _MODALITIES))
    for name, (low, high) in _RANGES.items():
        value = config.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool) and (
                value < low or (high is not None and value > high)):
            span = f"from {low} to {high}" if high is not None else f"at least {low}"
            yield Problem(origin[name], f"expected a value {span}, got {value}")
    for i, tool in enumerate(config.get("tools") or []):
        declarations = tool.get("function_declarations") or tool.get("functionDeclarations") if isinstance(
            tool, dict) else None
        for j, declaration in enumerate(declarations or []):
            function = declaration.get("name") if isinstance(declaration, dict) else None
            if not isinstance(function, str) or not function or len(function) > 64 \
                    or not set(function) <= _FUNCTION_NAME_CHARS or function[0].isdigit():
                yield Problem((*origin["tools"], i, "function_declarations", j, "name"),
                              f"a function needs a name of 1-64 letters, digits, '_', '.' or '-' (not starting "
                              f"with a digit), got {_kind(function)}")


# --- pydantic, its errors and the SDK's silent enums --------------------------------------------------------


def _validated(model: Any, value: Any, at: Path, names: Mapping[str, str] | None = None) -> list[Problem]:
    """Problems of ``value`` as a ``model`` (a google-genai type), at the paths of the value as written."""
    return _instance(model, value, at, names)[1]


def _instance(model: Any, value: Any, at: Path, names: Mapping[str, str] | None = None) -> tuple[Any, list[Problem]]:
    """``value`` as a ``model`` (None if it is not one) and its problems, at the paths of the value as written."""
    import pydantic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an unknown enum value is a warning in the SDK; found below instead
        try:
            instance = model.model_validate(value)
        except pydantic.ValidationError as exc:
            return None, [_explain(error, value, at, names, model) for error in exc.errors()]
    return instance, [Problem(_written(value, path, at, names), message)
                      for path, message in _bad_enums(instance, ())]


def _validated_params(params_type: Any, params: dict[str, Any], origin: dict[str, Path],
                      problems: list[Problem]) -> Any:
    import pydantic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            instance = params_type.model_validate(params)
        except pydantic.ValidationError as exc:
            problems += [_from_config(error["loc"], _message(error, params_type), params, origin)
                         for error in exc.errors()]
            return None
    problems += [_from_config(path, message, params, origin) for path, message in _bad_enums(instance, ())]
    return instance


def _from_config(loc: tuple[Any, ...], message: str, params: dict[str, Any], origin: dict[str, Path]) -> Problem:
    """A problem found in the SDK's parameters, at its place in the request as written."""
    if len(loc) >= 2 and loc[0] == "config" and isinstance(loc[1], str):
        field = _snake(loc[1])
        start = origin.get(field) or (*origin.get("config", ("generation_config",)), loc[1])
        return Problem(_written(params["config"].get(field), loc[2:], start, None), message)
    return Problem(tuple(str(p) for p in loc), message)


def _explain(error: Any, value: Any, at: Path, names: Mapping[str, str] | None, model: Any) -> Problem:
    return Problem(_written(value, error["loc"], at, names), _message(error, model))


def _message(error: Any, root: Any) -> str:
    kind, got = error["type"], error.get("input")
    if kind == "extra_forbidden":
        field = str(error["loc"][-1])
        return _unknown((), field, _fields_at(root, error["loc"][:-1])).message
    if kind.endswith("_parsing") or kind.endswith("_type"):
        wanted = kind.split("_")[0].replace("float", "number").replace("int", "integer").replace("bool", "boolean")
        wanted = {"model": "mapping", "dict": "mapping", "string": "string", "list": "list"}.get(wanted, wanted)
        return f"expected {'an' if wanted[0] in 'aeiou' else 'a'} {wanted}, got {_kind(got)}"
    return f"{error['msg']}, got {_kind(got)}"


def _bad_enums(value: Any, path: tuple[Any, ...]) -> Iterator[tuple[tuple[Any, ...], str]]:
    """Enum values google-genai accepted with a warning (it keeps any string): the service refuses them."""
    import pydantic

    if isinstance(value, Enum):
        members = type(value).__members__
        if value.name not in members:
            allowed = [m for m in members if not m.endswith("_UNSPECIFIED")]
            yield path, f"expected one of {', '.join(allowed)}; got {value.value!r}" + _did_you_mean(
                str(value.value).upper(), allowed)
    elif isinstance(value, pydantic.BaseModel):
        for name in type(value).model_fields:
            item = getattr(value, name)
            if item is not None:
                yield from _bad_enums(item, (*path, name))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _bad_enums(item, (*path, i))
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _bad_enums(item, (*path, key))


def _written(value: Any, loc: tuple[Any, ...], at: Path, names: Mapping[str, str] | None) -> Path:
    """A pydantic location (field names, indices, and union members such as ``function-after[...]``) as the
    path of the value as written (its own spelling of each field)."""
    path = list(at)
    for step in loc:
        if isinstance(value, list) and isinstance(step, int) and step < len(value):
            path.append(step)
            value = value[step]
        elif isinstance(value, list) and isinstance(step, str):  # pydantic left out the index: find the item
            index = next((i for i, item in enumerate(value) if isinstance(item, dict) and step in item), None)
            if index is None:
                break
            path.append(index)
            value = value[index]
            path.append(step)
            value = value[step]
        elif isinstance(value, dict) and isinstance(step, str):
            key = next((k for k in (step, camel(step), _snake(step)) if k in value), None)
            if key is None:
                path.append(names.get(step, step) if names and len(path) == len(at) else step)
                break
            path.append(names.get(key, key) if names and len(path) == len(at) else key)
            value = value[key]
    return tuple(path)


def _fields_at(root: Any, loc: tuple[Any, ...]) -> list[str]:
    """The field names of the google-genai type at ``loc`` under ``root`` (for did-you-mean)."""
    import pydantic

    model = root
    for step in loc:
        if step == "tools":  # a list the SDK checks by a validator function, not by its annotation
            model = _sdk()[0].Tool
            continue
        if not isinstance(step, str) or not (isinstance(model, type) and issubclass(model, pydantic.BaseModel)):
            continue
        field = model.model_fields.get(step) or model.model_fields.get(_snake(step))
        if field is None:
            continue
        model = next((t for t in _members(field.annotation)
                      if isinstance(t, type) and issubclass(t, pydantic.BaseModel)), model)
    if isinstance(model, type) and issubclass(model, pydantic.BaseModel):
        return [n for n in model.model_fields if n not in ("model",)]
    return []


def _members(annotation: Any) -> Iterator[Any]:
    for arg in typing.get_args(annotation) or (annotation,):
        if typing.get_args(arg):
            yield from _members(arg)
        else:
            yield arg


# --- small helpers ------------------------------------------------------------------------------------------


def names_of(mapping: Mapping[str, Any], field: str) -> str:
    """``field`` as ``mapping`` spells it (snake_case or camelCase)."""
    return field if field in mapping else camel(field)


def _put(config: dict[str, Any], origin: dict[str, Path], field: str, value: Any, path: Path,
         problems: list[Problem]) -> None:
    if field in config:
        problems.append(Problem(path, f"given twice (also at {dotted(origin[field])})"))
        return
    config[field] = value
    origin[field] = path


def _plain_contents(contents: Any) -> bool:
    """Contents of text parts only, in a shape the SDK sends unchanged: they need no conversion."""
    if type(contents) is not list:
        return False
    for content in contents:
        if type(content) is not dict or not content.keys() <= {"role", "parts"} \
                or content.get("role", "user") not in _ROLES or not _plain_content(content):
            return False
    return True


def _plain_content(content: Any) -> bool:
    if type(content) is not dict or content.keys() - {"role"} != {"parts"}:
        return False
    parts = content["parts"]
    return type(parts) is list and all(type(p) is dict and len(p) == 1 and type(p.get("text")) is str
                                       for p in parts)


def _unknown(at: Path, field: str, allowed: typing.Sequence[str]) -> Problem:
    choices = list(allowed) + [camel(a) for a in allowed]
    return Problem((*at, field), f"unknown field {field!r}" + (
        _did_you_mean(field, choices) or f" (expected one of: {', '.join(allowed)})"))


def _did_you_mean(word: str, choices: typing.Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), 1, 0.6)
    if not close:
        lowered = {c.lower().replace("_", ""): c for c in choices}
        hit = lowered.get(word.lower().replace("_", ""))
        close = [hit] if hit else []
    return f" (did you mean {close[0]!r}?)" if close else ""


def _kind(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return "null" if value is None else str(value).lower()
    if isinstance(value, str):
        return repr(value if len(value) <= 40 else value[:37] + "...")
    if isinstance(value, int | float):
        return str(value)
    return "a mapping" if isinstance(value, dict) else "a list" if isinstance(value, list) else type(value).__name__


@functools.cache
def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)


@functools.cache
def camel(name: str) -> str:
    """``generation_config`` -> ``generationConfig`` (proto-JSON's name of a field; the rest of a word kept)."""
    head, *rest = name.split("_")
    return head + "".join(word[:1].upper() + word[1:] for word in rest)


@functools.cache
def _sdk() -> tuple[Any, Any, Any]:
    """google-genai's types, converters and helpers (imported on first use: ~0.7 s)."""
    from google.genai import _common, models, types

    return types, models, _common


@functools.cache
def _client(vertex: bool, project: str, location: str) -> Any:
    """An SDK client that makes no call: it lends the converters its API and (Vertex) project and location."""
    from google import genai

    if vertex:
        return genai.Client(vertexai=True, project=project, location=location)._api_client
    return genai.Client(api_key="unused")._api_client


_CONVERTED: dict[tuple[Any, ...], dict[str, Any] | RequestProblems] = {}


def _converted(convert: Callable[[bytes], dict[str, Any]], key: tuple[Any, ...]) -> dict[str, Any]:
    """``convert(blob)``, remembered for the process (one spec is often read more than once: validate, plan)."""
    found = _CONVERTED.get(key)
    if found is None:
        try:
            found = convert(key[-1])
        except RequestProblems as exc:
            found = exc
        if len(_CONVERTED) >= _MEMO:
            _CONVERTED.clear()
        _CONVERTED[key] = found
    if isinstance(found, RequestProblems):
        raise found
    return found


@functools.cache
def _transformers() -> Any:
    from google.genai import _transformers

    return _transformers
