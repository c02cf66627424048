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

Templates in the simple subset (text and ``{{ field }}`` / ``{{ field.attr }}``, see ``fast_templates``) are also
compiled into one function of the record that gives the same key and request without Jinja; a record it fails on,
and every record of a spec with a template outside the subset in a place it cannot call out to, renders through
Jinja. The parts of such a request that hold no template are shared by every request: treat it as read-only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError, Undefined
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from batchflow.errors import DataError
from batchflow.request import media
from batchflow.request.compiled import Code, Whole, single_expression, static, templated
from batchflow.request.wire import Path, RequestBuilder, RequestProblems, camel, dotted, task_prefix
from batchflow.sources.base import SourceRecord
from batchflow.spec.limits import MEDIA_FILE_MAX_BYTES, media_type_cap, media_types
from batchflow.spec.models import bare, embedding_of
from batchflow.spec.spec import InvalidSpec, Spec

_Build = Callable[[dict[str, Any]], Any]
_SpecPath = Callable[[Path], str]
_SCALARS = frozenset({str, int, float, bool, type(None)})


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

    def __init__(self, spec: Spec, *, fast: bool = True) -> None:
        self._spec = spec
        self._env = ImmutableSandboxedEnvironment(
            undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True
        )
        self._problems: list[str] = []
        self._gen = Code(self._env, _json_value)
        self._codes: dict[int, str] = {}  # id(builder) -> its fast-path expression
        self._request_code: str | None = None
        backend = spec.backend
        self._builder = RequestBuilder(backend.type, spec.task, spec.model, backend.project or "project",
                                       backend.location or "global")
        self._key = None if spec.key is None else self._leaf(spec.key, "key", typed=True)
        self._media = media.may_have_media(spec)  # file_data parts resolved in each request (_with_media)
        self.file_stats: media.FileStats | None = None  # set by a preparation: the local files requests read
        self._request = self._embed() if spec.task == "embed" else self._generate()
        if self._problems:
            raise InvalidSpec(self._problems)
        self.fast: Whole | None = self._compile() if fast else None  # fast=False: Jinja only (the reference)
        """The fast path, when the spec has one: ``(record, ordinal) -> (key, request)`` without Jinja; it raises
        (anything) on a record it cannot render, and then ``render`` must. It does not check that the record is a
        dict with string field names, as ``render`` does: that is the caller's to know (JSON gives nothing else)."""

    def render(self, record: Mapping[str, Any], ordinal: int,
               where: str | SourceRecord) -> tuple[str, dict[str, Any]]:
        """The record's key and request; a ``DataError`` naming the record and the template if one fails.

        ``where`` is the record's place, or its ``SourceRecord`` (whose place is formatted only for an error)."""
        if self.fast is not None and type(record) is dict:
            try:
                "".join(record)  # the field names are all strings (as _context checks), in one C call
                return self.fast(record, ordinal)
            except Exception:  # a lookup missed or a value is odd: Jinja gives the value or the error
                pass
        key: str | None = None
        try:
            context = _context(record, ordinal)
            key = self._render_key(context, ordinal)
            request: dict[str, Any] = self._request(context)
        except _LeafError as exc:
            raise DataError(self._explain(exc, where, ordinal, key)) from None
        return key, request

    def key_of(self, record: Mapping[str, Any], ordinal: int) -> str | None:
        """The record's key alone, or None when even that cannot be rendered (for a bad record's error row)."""
        try:
            return self._render_key(_context(record, ordinal), ordinal)
        except Exception:
            return None

    def _render_key(self, context: dict[str, Any], ordinal: int) -> str:
        if self._key is None:
            return str(ordinal)
        try:
            return _key_of(self._key(context))
        except _Bad as exc:
            raise _LeafError("key", exc) from None

    def _compile(self) -> Whole | None:
        """The fast path: one function of the record for the key and the request, where the spec allows one."""
        if self._request_code is None:
            return None
        gen = self._gen
        key = gen.call(str, "o")
        if self._key is not None:
            text = str(self._spec.key)
            typed = single_expression(self._env, text) is not None
            key = (gen.key(text.strip(), _key_of) if typed else None) or gen.call(_key_of, self._code(self._key))
        return gen.compile(key, self._request_code)

    def _code(self, build: _Build) -> str:
        """``build``'s fast-path expression; for a template outside the subset, a call of its Jinja builder."""
        code = self._codes.get(id(build))
        return code if code is not None else self._gen.call(build, self._gen.call(_context, "r", "o"))

    def _coded(self, build: _Build, code: str | None) -> _Build:
        if code is not None:
            self._codes[id(build)] = code
        return build

    def _generate(self) -> _Build:
        spec = self._spec
        rest: dict[str, Any] = {}  # the request's parts besides the contents, as the spec writes them
        extras: list[tuple[str, _Build]] = []
        if spec.system is not None:
            rest["system_instruction"] = {"parts": [{"text": spec.system}]}
            extras.append(("system_instruction", self._text_parts(self._leaf(spec.system, "system", typed=False))))
        elif spec.system_parts is not None:
            extras.append(("system_instruction", self._parts(spec.system_parts, "system")))
        if spec.generation_config is not None:
            rest["generation_config"] = spec.generation_config
            extras.append(("generation_config", self._tree(spec.generation_config, "generation_config")))
        self._check_static(rest, _from_prompt_spec)
        gen = self._gen
        if spec.request is not None:
            self._check_static(spec.request, _from_request_spec)
            body = self._tree(spec.request, "request")
            wire = self._static_rest(spec.request, _from_request_spec) if not extras else None
            if wire is not None:  # only the contents' text varies: the rest is converted once, here
                texts = self._tree(spec.request["contents"], "request.contents")  # type: ignore[index]
                self._request_code = gen.mapping([("contents", gen.call(_plain, self._code(texts)))]
                                                  + [(k, gen.const(v)) for k, v in wire.items()])
            elif not extras:  # filling in system / generation_config depends on the request: Jinja's path does it
                self._request_code = gen.call(self._finish, gen.call(_mapping, self._code(body)))
            return self._finished(_with_defaults(body, extras))
        if spec.prompt_parts is not None:  # a list of parts, media among them: Jinja's path alone
            return self._finished(_user_turn(self._parts(spec.prompt_parts, "prompt"), extras))
        text = self._leaf(spec.prompt or "", "prompt", typed=False)
        prompt = _text_parts(text)
        user = gen.mapping([("role", gen.const("user")), ("parts", gen.parts(self._code(text)))])
        user_contents = [("contents", gen.sequence([user]))]
        wire = self._static_rest(rest, _from_prompt_spec)
        if wire is not None:  # no template outside the prompt: the request's rest is converted once, here
            self._request_code = gen.mapping(user_contents + [(k, gen.const(v)) for k, v in wire.items()])
            return lambda context: {"contents": [{"role": "user", **prompt(context)}], **wire}
        self._request_code = gen.call(self._finish, gen.mapping(user_contents + [(n, self._code(p))
                                                                                 for n, p in extras]))
        return self._finished(_user_turn(prompt, extras))

    def _embed(self) -> _Build:
        spec = self._spec
        given = dict(spec.embed_config or {})
        if spec.content_parts is not None:  # a list of parts, media among them: Jinja's path alone, as prompt's
            self._check_static(given, _from_embed_spec)
            config = [(k, self._tree(v, f"embed_config.{k}")) for k, v in given.items()]
            built = self._embed_built(self._parts(spec.content_parts, "content"), config)
            self._request_code = None
            return built
        text = self._leaf(spec.content or "", "content", typed=False)
        content = self._text_parts(text)
        config = [(k, self._tree(v, f"embed_config.{k}")) for k, v in given.items()]
        self._check_static(given, _from_embed_spec)
        dims = given.get("output_dimensionality")
        if spec.backend.type == "vertex" and isinstance(dims, str) and embedding_of(spec.model).format == "instance":
            self._problems.append(f"{spec.where('embed_config.output_dimensionality')}: "
                                  "embed_config.output_dimensionality: on Vertex the embedding's size is the job's "
                                  "modelParameters, one number for every record: give a number, not a template")
        told = {k: v for k, v in given.items() if k in ("task_type", "taskType", "title")}
        if told and embedding_of(spec.model).task_in_text:
            if not static(told):  # the prefix differs per record: every request through the builder, which writes it
                return self._embed_built(content, config)
            prefix = task_prefix(told.get("task_type", told.get("taskType")), told.get("title"))
            given = {k: v for k, v in given.items() if k not in told}
            content = self._text_parts(self._coded(lambda context: prefix + text(context),
                                                   self._gen.call(prefix.__add__, self._code(text))))
        wire = self._static_rest(given, _from_embed_spec)
        if wire is None:
            return self._embed_built(content, [(k, part) for k, part in config if k in given])
        gen = self._gen
        self._request_code = gen.mapping([("content", self._code(content))]
                                         + [(k, gen.const(v)) for k, v in wire.items()])
        return lambda context: {"content": content(context), **wire}

    def _embed_built(self, content: _Build, config: list[tuple[str, _Build]]) -> _Build:
        """An embed request whose config varies per record: built, then checked and converted by the builder."""
        self._request_code = self._gen.call(self._finish, self._gen.mapping(
            [("content", self._code(content))] + [(k, self._code(part)) for k, part in config]))

        def build(context: dict[str, Any]) -> dict[str, Any]:
            request: dict[str, Any] = {"content": content(context)}
            for name, part in config:
                request[name] = part(context)
            return request

        return self._finished(build)

    def _finished(self, build: _Build) -> _Build:
        """``build``, its request then checked and put in the SDK's wire form (``request_json``)."""
        return lambda context: self._finish(build(context))

    def _finish(self, request: Any) -> dict[str, Any]:
        if self._media:
            self._with_media(request)
        try:
            return self._builder.build(request)
        except RequestProblems as exc:
            first, more = exc.problems[0], len(exc.problems) - 1
            spec_path = {"generate": _from_request_spec if self._spec.request is not None else _from_prompt_spec,
                         "embed": _from_embed_spec}[self._spec.task]
            why = _Bad(first.message + (f" (and {more} more)" if more else ""))
            raise _LeafError(spec_path(first.path), why) from None

    def _parts(self, parts: tuple[str | Mapping[str, str], ...], dotted: str) -> _Build:
        """A builder of ``{"parts": [...]}`` from a spec's list of parts: text templates and media parts (their
        reference rendered into a ``file_data`` part, resolved by ``_with_media``)."""
        builds: list[_Build] = []
        for i, part in enumerate(parts):
            if isinstance(part, str):
                builds.append(_text_part(self._leaf(part, f"{dotted}.{i}", typed=False)))
                continue
            ref = self._leaf(part["media"], f"{dotted}.{i}.media", typed=False)
            mime = part.get("mime_type")
            builds.append(_media_part(ref, None if mime is None else
                                      self._leaf(mime, f"{dotted}.{i}.mime_type", typed=False)))
        return lambda context: {"parts": [build(context) for build in builds]}

    def _with_media(self, request: Any) -> None:
        """Each ``file_data`` part of the request that names a file batchflow reads (a local path, gs://; from a
        prompt's media part, https too) resolved in place: its URI tagged with the content's identity, its MIME
        type filled in and checked; a bad one a ``_LeafError`` at its place in the spec."""
        if not isinstance(request, dict):
            return
        base, types = self._spec.path.parent, media_types(self._spec.task, self._spec.model)
        from_prompt = self._spec.request is None
        found: list[media.Media] = []
        for path, part in _file_parts(request):
            holder = "file_data" if "file_data" in part else "fileData"
            data = part[holder]
            uri_field = "file_uri" if "file_uri" in data else "fileUri"
            mime_field = "mime_type" if "mime_type" in data or "mimeType" not in data else "mimeType"
            uri = data.get(uri_field)
            if not isinstance(uri, str) or not (from_prompt or _staged_by_batchflow(uri)):
                continue
            if media.untagged(uri)[1] is not None:
                continue  # resolved already
            try:
                resolved = media.resolve(uri, base, data.get(mime_field), mime_types=types,
                                         max_bytes=MEDIA_FILE_MAX_BYTES)
                self._check_type_cap(resolved)
            except DataError as exc:
                if self.file_stats is not None:
                    self.file_stats.unsure()  # the file may be there next time: look again then
                raise _LeafError(_media_spec_path(path, from_prompt), _Bad(str(exc))) from None
            part[holder] = {uri_field: resolved.tagged(), mime_field: resolved.mime_type}
            found.append(resolved)
            if self.file_stats is not None:
                self.file_stats.add(resolved)
        caps = embedding_of(self._spec.model).media if self._spec.task == "embed" else None
        if caps is not None and found:
            try:
                media.check_caps(found, caps, bare(self._spec.model))
            except DataError as exc:
                raise _LeafError("content", _Bad(str(exc))) from None

    def _check_type_cap(self, found: media.Media) -> None:
        """A file over the backend's own cap for its type (Vertex: an image, a PDF) is that record's DataError."""
        cap = media_type_cap(self._spec.backend.type, found.mime_type)
        if cap is not None and found.size is not None and found.size > cap[0]:
            raise DataError(f"media {str(found.path or found.uri)!r}: {found.size:,} bytes is over the "
                            f"{self._spec.backend.type} backend's limit of {cap[0]:,} bytes {cap[1]}")

    def _check_static(self, tree: Any, spec_path: _SpecPath) -> None:
        """The spec's own mistakes in a request, found before any record: the tree's templated leaves left out,
        the rest through google-genai's types; each problem at its place in the spec (file:line:col)."""
        fixed = _without_templates(tree)
        if not isinstance(fixed, dict) or not fixed:
            return
        if self._spec.task == "generate" and spec_path is _from_request_spec:
            fixed = {k: v for k, v in fixed.items() if k != "contents"} | (
                {"contents": fixed["contents"]} if _contents_checkable(fixed.get("contents")) else {})
        elif self._spec.task == "embed":
            fixed = {**fixed, "content": {"parts": [{"text": ""}]}}
        try:
            self._builder.build(fixed)
        except RequestProblems as exc:
            for problem in exc.problems:
                dotted = spec_path(problem.path)
                self._problems.append(f"{self._spec.where(dotted)}: {dotted}: {problem.message}")

    def _static_rest(self, tree: Any, spec_path: _SpecPath) -> dict[str, Any] | None:
        """The wire form of a request's parts besides its contents when they hold no template and its contents
        are plain text (a role and text parts, the text templated at most); else None."""
        if not isinstance(tree, dict):
            return None
        rest = {k: v for k, v in tree.items() if k not in ("contents", "content")}
        if not static(rest) or ("contents" in tree and not _text_template_contents(tree["contents"])):
            return None
        if self._problems:
            return None  # the spec is refused anyway
        probe = {**rest, **({"content": {"parts": [{"text": ""}]}} if self._spec.task == "embed" else {})}
        try:
            wire = self._builder.build(probe)
        except RequestProblems:
            return None  # _check_static has said why
        wire.pop("content", None)
        wire.pop("contents", None)
        return wire

    def _tree(self, value: Any, dotted: str) -> _Build:
        """A builder for a request subtree: string leaves are templates; containers are rebuilt per record."""
        if isinstance(value, str):
            return self._leaf(value, dotted, typed=True)
        gen = self._gen
        if isinstance(value, Mapping):
            items = [(k, self._tree(v, f"{dotted}.{k}")) for k, v in value.items()]
            code = gen.const(value) if static(value) else gen.mapping([(k, self._code(b)) for k, b in items])
            return self._coded(lambda context: {k: build(context) for k, build in items}, code)
        if isinstance(value, list):
            builds = [self._tree(v, f"{dotted}.{i}") for i, v in enumerate(value)]
            code = gen.const(value) if static(value) else gen.sequence([self._code(b) for b in builds])
            return self._coded(lambda context: [build(context) for build in builds], code)
        return self._coded(lambda context: value, gen.const(value))  # numbers, booleans, null: immutable

    def _leaf(self, text: str, dotted: str, *, typed: bool) -> _Build:
        if not templated(text):
            return self._coded(lambda context: text, self._gen.const(text))
        try:
            expression = single_expression(self._env, text) if typed else None
            if expression is not None:
                compiled = self._env.compile_expression(expression, undefined_to_none=False)
                build = _guard(dotted, lambda context: _to_json(compiled(context)))
                return self._coded(build, self._gen.value(text.strip()))
            build = _guard(dotted, self._env.from_string(text).render)
            return self._coded(build, self._gen.text(text))
        except TemplateSyntaxError as exc:
            line = f" (line {exc.lineno} of the template)" if "\n" in text.strip() else ""
            self._problems.append(f"{self._spec.where(dotted)}: {dotted}: template syntax error: {exc.message}{line}")
            return lambda context: None

    def _text_parts(self, text: _Build) -> _Build:
        gen = self._gen
        return self._coded(_text_parts(text), gen.mapping([("parts", gen.parts(self._code(text)))]))

    def _explain(self, exc: _LeafError, where: str | SourceRecord, ordinal: int, key: str | None) -> str:
        cause = exc.cause
        if isinstance(cause, SecurityError):
            what = f"refused by the sandbox: {cause}"
        elif isinstance(cause, TemplateError | _Bad):
            what = str(cause)
        else:
            what = f"{type(cause).__name__}: {cause}"
        record = f"record {ordinal}" + (f" (key '{key}')" if key and self._key else "")
        template = f"{self._spec.where(exc.dotted)}: {exc.dotted}: " if exc.dotted else ""
        place = where if isinstance(where, str) else where.where
        return f"{place}: {record}: {template}{what}".replace("\n", "\\n")


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


def _user_turn(parts: _Build, extras: list[tuple[str, _Build]]) -> _Build:
    """A request of one user turn (``parts`` gives its ``{"parts": [...]}``) and the spec's other members."""
    def build(context: dict[str, Any]) -> dict[str, Any]:
        request: dict[str, Any] = {"contents": [{"role": "user", **parts(context)}]}
        for name, part in extras:
            request[name] = part(context)
        return request

    return build


def _text_part(text: _Build) -> _Build:
    return lambda context: {"text": text(context)}


def _media_part(ref: _Build, mime: _Build | None) -> _Build:
    def build(context: dict[str, Any]) -> dict[str, Any]:
        data = {"file_uri": ref(context)}
        if mime is not None:
            data["mime_type"] = mime(context)
        return {"file_data": data}

    return build


def _file_parts(request: dict[str, Any]) -> Iterator[tuple[Path, dict[str, Any]]]:
    """(path in the request, part) of every file_data part in its contents and system instruction, or in an embed
    request's one content."""
    if isinstance(request.get("content"), dict):
        yield from _parts_of(request["content"], ("content",))
    for name in ("system_instruction", "systemInstruction"):
        system = request.get(name)
        if isinstance(system, dict):
            yield from _parts_of(system, (name,))
    contents = request.get("contents")
    if isinstance(contents, list):
        for i, content in enumerate(contents):
            if isinstance(content, dict):
                yield from _parts_of(content, ("contents", i))


def _parts_of(content: dict[str, Any], at: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    parts = content.get("parts")
    if isinstance(parts, list):
        for i, part in enumerate(parts):
            if isinstance(part, dict) and isinstance(part.get("file_data", part.get("fileData")), dict):
                yield (*at, "parts", i), part


def _staged_by_batchflow(uri: str) -> bool:
    """A URI in a ready-made request that batchflow resolves and stages: a local path or gs://; others pass."""
    scheme = uri.split("://", 1)[0].lower() if "://" in uri else ""
    return scheme in ("", "file", "gs")


def _media_spec_path(path: Path, from_prompt: bool) -> str:
    """A file_data part's place in the request -> its place in the spec (``prompt.2.media``, ``request....``)."""
    if not from_prompt:
        return dotted(("request", *path))
    head = {"system_instruction": "system", "systemInstruction": "system", "content": "content"}.get(
        str(path[0]), "prompt")
    return f"{head}.{path[-1]}.media"


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
    present = name if name in request else camel(name) if camel(name) in request else None
    if present is None:
        request[name] = part(context)
        return
    given = request[present]
    if name == "generation_config" and isinstance(given, dict):
        for field, value in part(context).items():
            if field not in given and camel(field) not in given:
                given[field] = value


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


def _key_of(value: Any) -> str:
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise _Bad(f"the key must be a string or a number, got {_kind(value)}")
    key = str(value).strip()
    if not key:
        raise _Bad("the key is empty")
    return key


def _json_value(value: Any) -> Any:
    """``_to_json`` with the common case first."""
    return value if type(value) in _SCALARS else _to_json(value)


def _mapping(request: Any) -> dict[str, Any]:
    if not isinstance(request, dict):
        raise _Bad("not a mapping")  # the Jinja path explains
    return request


def _from_prompt_spec(path: Path) -> str:
    """A path in a request made of ``system`` and ``generation_config`` -> the spec's own path."""
    head, *rest = path or ("",)
    return "system" if head == "system_instruction" else dotted(("generation_config", *rest)) \
        if head == "generation_config" else dotted(path)


def _from_request_spec(path: Path) -> str:
    return dotted(("request", *path))


def _from_embed_spec(path: Path) -> str:
    return "content" if path[:1] == ("content",) else dotted(("embed_config", *path))


def _without_templates(value: Any) -> Any:
    """``value`` without its templated leaves (what they give is checked per record); a list with a templated
    item is left out whole (its indices would no longer be the spec's)."""
    if isinstance(value, dict):
        kept = {k: _without_templates(v) for k, v in value.items() if static(v) or not isinstance(v, str)}
        return {k: v for k, v in kept.items() if v is not _TEMPLATED}
    if isinstance(value, list):
        items = [_without_templates(v) for v in value]
        return _TEMPLATED if any(v is _TEMPLATED or (isinstance(v, str) and templated(v)) for v in items) else items
    return value


_TEMPLATED = object()


def _contents_checkable(contents: Any) -> bool:
    return isinstance(contents, list) and contents is not _TEMPLATED


def _text_template_contents(contents: Any) -> bool:
    """Contents that give plain-text contents whatever the record: a static role and text parts whose text is a
    template that renders to a string (not a lone ``{{ expression }}``, which keeps its value's type)."""
    if not isinstance(contents, list):
        return False
    for content in contents:
        if not isinstance(content, dict) or set(content) - {"role", "parts"} or "parts" not in content:
            return False
        if content.get("role", "user") not in ("user", "model"):
            return False
        parts = content["parts"]
        if not isinstance(parts, list) or not all(
                isinstance(p, dict) and list(p) == ["text"] and isinstance(p["text"], str) for p in parts):
            return False
    return True


def _plain(contents: Any) -> Any:
    """The contents, after a check that each text is a string (else the record takes the Jinja path)."""
    for content in contents:
        for part in content["parts"]:
            if type(part["text"]) is not str:
                raise _Bad("not text")
    return contents
