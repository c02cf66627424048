"""Templating: every record becomes ``(key, request)``; every template in the spec is compiled once.

Request shapes (``task: generate``)::

    prompt + system + generation_config ->
        {"contents": [{"role": "user", "parts": [{"text": <prompt>}]}],
         "system_instruction": {"parts": [{"text": <system>}]},
         "generation_config": {...}}

    request -> the rendered request as it is; ``system`` and ``generation_config``, if also given, only fill in
        what the request leaves out (the record's own request is the more specific): ``system_instruction`` is
        added when the request has neither ``system_instruction`` nor ``systemInstruction``; each
        ``generation_config`` field is added when the request's config has it under neither spelling.

``task: embed``: ``{"content": {"parts": [{"text": <content>}]}, **embed_config}``.

A string leaf of ``request``, ``generation_config`` or ``embed_config`` that is exactly one ``{{ expression }}``
takes the expression's value with its type; any other string leaf renders to a string. ``prompt``, ``system``
and ``content`` always render to strings.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError, Undefined
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from batchflow.errors import DataError
from batchflow.spec import InvalidSpec, Spec

_Build = Callable[[dict[str, Any]], Any]
# the tokens an expression is made of: anything else (text, a second {{ }}, {% %}) makes a leaf a string template
_EXPRESSION_TOKENS = frozenset({"whitespace", "name", "operator", "string", "integer", "float"})
_SCALARS = (str, int, float, bool, type(None))


class _Bad(Exception):
    """What a template gave is unusable (not JSON, an empty key, ...)."""


class _LeafError(Exception):
    """A template at ``dotted`` failed on a record."""

    def __init__(self, dotted: str, cause: BaseException) -> None:
        super().__init__(dotted)
        self.dotted = dotted
        self.cause = cause


class Renderer:
    """Turns records into ``(key, request)`` pairs with the spec's templates, compiled once."""

    def __init__(self, spec: Spec) -> None:
        self._spec = spec
        self._env = ImmutableSandboxedEnvironment(
            undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True
        )
        self._problems: list[str] = []
        self._key = None if spec.key is None else self._leaf(spec.key, "key", typed=True)
        self._request = self._embed() if spec.task == "embed" else self._generate()
        if self._problems:
            raise InvalidSpec(self._problems)

    def render(self, record: Mapping[str, Any], ordinal: int, where: str) -> tuple[str, dict[str, Any]]:
        """The record's key and request; a ``DataError`` naming the record and the template if one fails."""
        key: str | None = None
        try:
            context = _context(record, ordinal)
            key = self._render_key(context, ordinal)
            request: dict[str, Any] = self._request(context)
        except _LeafError as exc:
            raise DataError(self._explain(exc, where, ordinal, key)) from None
        return key, request

    def _render_key(self, context: dict[str, Any], ordinal: int) -> str:
        if self._key is None:
            return str(ordinal)
        value = self._key(context)
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise _LeafError("key", _Bad(f"the key must be a string or a number, got {_kind(value)}"))
        key = str(value).strip()
        if not key:
            raise _LeafError("key", _Bad("the key is empty"))
        return key

    def _generate(self) -> _Build:
        spec = self._spec
        extras: list[tuple[str, _Build]] = []
        if spec.system is not None:
            extras.append(("system_instruction", _text_parts(self._leaf(spec.system, "system", typed=False))))
        if spec.generation_config is not None:
            extras.append(("generation_config", self._tree(spec.generation_config, "generation_config")))
        if spec.request is not None:
            return _with_defaults(self._tree(spec.request, "request"), extras)
        prompt = _text_parts(self._leaf(spec.prompt or "", "prompt", typed=False))

        def build(context: dict[str, Any]) -> dict[str, Any]:
            request: dict[str, Any] = {"contents": [{"role": "user", **prompt(context)}]}
            for name, part in extras:
                request[name] = part(context)
            return request

        return build

    def _embed(self) -> _Build:
        content = _text_parts(self._leaf(self._spec.content or "", "content", typed=False))
        config = [(k, self._tree(v, f"embed_config.{k}")) for k, v in (self._spec.embed_config or {}).items()]

        def build(context: dict[str, Any]) -> dict[str, Any]:
            request: dict[str, Any] = {"content": content(context)}
            for name, part in config:
                request[name] = part(context)
            return request

        return build

    def _tree(self, value: Any, dotted: str) -> _Build:
        """A builder for a request subtree: string leaves are templates; containers are rebuilt per record."""
        if isinstance(value, str):
            return self._leaf(value, dotted, typed=True)
        if isinstance(value, Mapping):
            items = [(k, self._tree(v, f"{dotted}.{k}")) for k, v in value.items()]
            return lambda context: {k: build(context) for k, build in items}
        if isinstance(value, list):
            builds = [self._tree(v, f"{dotted}.{i}") for i, v in enumerate(value)]
            return lambda context: [build(context) for build in builds]
        return lambda context: value  # numbers, booleans, null: immutable, so shared

    def _leaf(self, text: str, dotted: str, *, typed: bool) -> _Build:
        if not any(mark in text for mark in ("{{", "{%", "{#")):
            return lambda context: text
        try:
            expression = _single_expression(self._env, text) if typed else None
            if expression is not None:
                compiled = self._env.compile_expression(expression, undefined_to_none=False)
                return _guard(dotted, lambda context: _to_json(compiled(context)))
            return _guard(dotted, self._env.from_string(text).render)
        except TemplateSyntaxError as exc:
            line = f" (line {exc.lineno} of the template)" if "\n" in text.strip() else ""
            self._problems.append(f"{self._spec.where(dotted)}: {dotted}: template syntax error: {exc.message}{line}")
            return lambda context: None

    def _explain(self, exc: _LeafError, where: str, ordinal: int, key: str | None) -> str:
        cause = exc.cause
        if isinstance(cause, SecurityError):
            what = f"refused by the sandbox: {cause}"
        elif isinstance(cause, TemplateError | _Bad):
            what = str(cause)
        else:
            what = f"{type(cause).__name__}: {cause}"
        record = f"record {ordinal}" + (f" (key '{key}')" if key and self._key else "")
        template = f"{self._spec.where(exc.dotted)}: {exc.dotted}: " if exc.dotted else ""
        return f"{where}: {record}: {template}{what}".replace("\n", "\\n")


def _context(record: Mapping[str, Any], ordinal: int) -> dict[str, Any]:
    """The template's variables: the record's fields, and ``record`` and ``ordinal`` unless it has such fields."""
    if not isinstance(record, Mapping):
        raise _LeafError("", _Bad(f"expected the record to be an object, got {_kind(record)}"))
    if not all(isinstance(name, str) for name in record):
        raise _LeafError("", _Bad("the record's field names must be strings"))
    return {"record": record, "ordinal": ordinal, **record}


def _guard(dotted: str, run: _Build) -> _Build:
    """``run``, with any exception from inside the template tagged with the template's spec path."""

    def guarded(context: dict[str, Any]) -> Any:
        try:
            return run(context)
        except _LeafError:
            raise
        except Exception as exc:  # templates are user code: whatever they raise is a data error
            raise _LeafError(dotted, exc) from exc

    return guarded


def _text_parts(text: _Build) -> _Build:
    return lambda context: {"parts": [{"text": text(context)}]}


def _with_defaults(body: _Build, extras: list[tuple[str, _Build]]) -> _Build:
    def build(context: dict[str, Any]) -> dict[str, Any]:
        request = body(context)
        if not isinstance(request, dict):
            raise _LeafError("request", _Bad(f"expected the request to be a mapping, got {_kind(request)}"))
        for name, part in extras:
            _fill(request, name, part, context)
        return request

    return build


def _fill(request: dict[str, Any], name: str, part: _Build, context: dict[str, Any]) -> None:
    """Add ``name`` to the request unless it is there (in either spelling); merge configs field by field."""
    present = name if name in request else _camel(name) if _camel(name) in request else None
    if present is None:
        request[name] = part(context)
        return
    given = request[present]
    if name == "generation_config" and isinstance(given, dict):
        for field, value in part(context).items():
            if field not in given and _camel(field) not in given:
                given[field] = value


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(word.capitalize() for word in rest)


def _single_expression(env: ImmutableSandboxedEnvironment, text: str) -> str | None:
    """The expression if ``text`` is exactly one ``{{ expression }}`` (whitespace around it allowed)."""
    stripped = text.strip()
    if not (stripped.startswith("{{") and stripped.endswith("}}")):
        return None
    tokens = list(env.lex(stripped))
    if tokens[0][1] != "variable_begin" or tokens[-1][1] != "variable_end":
        return None
    if any(kind not in _EXPRESSION_TOKENS for _, kind, _ in tokens[1:-1]):
        return None
    return stripped[len(tokens[0][2]) : len(stripped) - len(tokens[-1][2])]


def _to_json(value: Any) -> Any:
    """A fresh copy of an expression's value, checked to be JSON (so a request never shares a record's dicts)."""
    if type(value) in _SCALARS:
        return value
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()
    if isinstance(value, Mapping):
        if not all(isinstance(k, str) for k in value):
            raise _Bad("gives a mapping whose keys are not all strings")
        return {k: _to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_to_json(v) for v in value]
    for plain in (str, bool, int, float):  # subclasses (Markup, IntEnum, ...) as their plain type
        if isinstance(value, plain):
            return plain(value)
    raise _Bad(f"gives {_kind(value)}, which JSON cannot hold (a list needs '| list')")


def _kind(value: Any) -> str:
    return "null" if value is None else f"a {type(value).__name__}"
