"""The fast path: a spec's templates compiled to one Python function per spec, for the templates Jinja needn't run.

Jinja compiles a template to Python too, but each render builds a context, resolves names through the sandbox and
joins generated output: ~10 µs a template. For templates in the subset below, ``Code`` writes one expression per
request -- a dict display with the templates' values in place -- so a record renders in well under 1 µs.

The subset, decided on Jinja's own syntax tree (so literal text is exactly what Jinja's lexer made of it: comments
dropped, ``{{-`` trimming done, newlines normalised, ``{% raw %}`` unwrapped): a template whose body is text and
*paths* only, where a path is ``{{ name }}`` or ``{{ name.attr.attr }}``. A name is looked up as in the template's
context: the record's field, else ``record`` (the whole record), else ``ordinal``. An attribute is looked up only
in a plain ``dict`` and only when it is not an attribute of ``dict`` itself (``items``, ``__class__``...): exactly
when the sandbox's ``getattr`` falls through to ``obj[attr]``. In text a value becomes ``"%s" % value``, which is
``str(value)``, as in Jinja's output with autoescape off (``None``, ``True``, floats as ``str`` gives them).

Everything else goes to Jinja: filters, tests, subscripts, literals, operators, calls, statements, the names
``self``, ``loop`` & co; and so does any record the function fails on (a missing field, a parent that is not a
dict, a value JSON cannot hold, a global such as ``range``): Jinja then gives the value or the error. No text of
the spec is ever part of the generated source: literals, field names and functions are passed in by name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from jinja2 import Environment, nodes

Whole = Callable[[dict[str, Any], int], tuple[str, dict[str, Any]]]
"""(record, ordinal) -> (key, request); raises anything at all when the record needs the Jinja path."""

# Names a Jinja template resolves specially (``self`` is the template itself) or may in a macro or loop.
_SPECIAL = frozenset({"self", "loop", "varargs", "kwargs", "caller", "super"})
_CONTEXT = frozenset({"record", "ordinal"})

Path = tuple[str, ...]


class Code:
    """Python expressions for parts of a request, over ``r`` (the record) and ``o`` (its ordinal)."""

    def __init__(self, env: Environment, value: Callable[[Any], Any]) -> None:
        self._env = env
        self._ns: dict[str, Any] = {"__builtins__": {}, "_value": value, "_str": str, "_type": type, "_getter": _get}

    def const(self, value: Any) -> str:
        """A value built once and shared by every request (the caller keeps it unchanged)."""
        return self._name(value)

    def call(self, build: Callable[..., Any], *args: str) -> str:
        """``build(args...)``: the slow way, for what is outside the subset."""
        return f"{self._name(build)}({', '.join(args)})"

    def text(self, text: str) -> str | None:
        """``text`` rendered to a string, or ``None`` if it is outside the subset."""
        pieces = self._pieces(text)
        if pieces is None:
            return None
        fmt = "".join(p.replace("%", "%%") if isinstance(p, str) else "%s" for p in pieces)
        values = [self._lookup(p) for p in pieces if not isinstance(p, str)]
        if not values:
            return self.const("".join(p for p in pieces if isinstance(p, str)))
        return f"({self._name(fmt)} % ({', '.join(values)},))"

    def value(self, text: str) -> str | None:
        """The typed value of ``text`` -- exactly ``{{ path }}`` -- or ``None`` if it is outside the subset."""
        lookup = self._single(text)
        return None if lookup is None else f"_value({lookup})"

    def key(self, text: str, key_of: Callable[[Any], str]) -> str | None:
        """``key_of`` of the value of ``text`` (as ``value``), with a string key stripped in line."""
        lookup = self._single(text)
        if lookup is None:
            return None
        slow = self._name(key_of)
        return f"((_k.strip() or {slow}(_k)) if _type(_k := {lookup}) is _str else {slow}(_k))"

    def mapping(self, items: list[tuple[str, str]]) -> str:
        return "{" + ", ".join(f"{self._name(k)}: {v}" for k, v in items) + "}"

    def sequence(self, items: list[str]) -> str:
        return "[" + ", ".join(items) + "]"

    def parts(self, text: str) -> str:
        """``[{"text": text}]``: the parts of a content."""
        return self.sequence([self.mapping([("text", text)])])

    def compile(self, key: str, request: str) -> Whole:
        """The function of the whole record: ``(key, request)``."""
        whole: Whole = eval(f"lambda r, o: ({key}, {request})", self._ns)  # our names and literal syntax only
        return whole

    def _name(self, value: Any) -> str:
        name = f"_{len(self._ns)}"
        self._ns[name] = value
        return name

    def _single(self, text: str) -> str | None:
        pieces = self._pieces(text)
        if pieces is None or len(pieces) != 1 or isinstance(pieces[0], str):
            return None
        return self._lookup(pieces[0])

    def _lookup(self, path: Path) -> str:
        name = path[0]
        if len(path) == 1 and name not in _CONTEXT:
            return f"r[{self._name(name)}]"
        return f"_getter(r, o, {self._name(path)})"

    def _pieces(self, text: str) -> list[str | Path] | None:
        """Literal text and paths, in order, if the whole template is in the subset."""
        body = self._env.parse(text).body
        if len(body) != 1 or not isinstance(body[0], nodes.Output):
            return None
        pieces: list[str | Path] = []
        for node in body[0].nodes:
            if isinstance(node, nodes.TemplateData):
                pieces.append(node.data)
                continue
            path = _path(node)
            if path is None:
                return None
            pieces.append(path)
        return pieces


def _path(node: nodes.Node) -> Path | None:
    attrs: list[str] = []
    while type(node) is nodes.Getattr:
        if hasattr(dict, node.attr):
            return None
        attrs.append(node.attr)
        node = node.node
    if type(node) is not nodes.Name or node.ctx != "load" or node.name in _SPECIAL:
        return None
    return (node.name, *reversed(attrs))


class Miss(Exception):
    """This record needs the Jinja path."""


def _get(record: Mapping[str, Any], ordinal: int, path: Path) -> Any:
    """A path with attributes, or the context's ``record`` / ``ordinal``, looked up as the sandbox would."""
    name = path[0]
    if name in record:
        value = record[name]
    elif name == "record":
        value = record
    elif name == "ordinal":
        value = ordinal
    else:
        raise Miss(name)
    for attr in path[1:]:
        if type(value) is not dict:
            raise Miss(attr)
        value = value[attr]
    return value


# The shape of a template, as the Renderer decides it (these decide what Jinja does, not only the fast path).

# the tokens an expression is made of: anything else (text, a second {{ }}, {% %}) makes a leaf a string template
_EXPRESSION_TOKENS = frozenset({"whitespace", "name", "operator", "string", "integer", "float"})


def single_expression(env: Environment, text: str) -> str | None:
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


def templated(text: str) -> bool:
    """Whether ``text`` holds a Jinja tag at all (else it is a constant)."""
    return any(mark in text for mark in ("{{", "{%", "{#"))


def static(value: Any) -> bool:
    """Whether a part of the spec holds no template at all (so one copy of it serves every request)."""
    if isinstance(value, str):
        return not templated(value)
    if isinstance(value, Mapping):
        return all(static(v) for v in value.values())
    if isinstance(value, list):
        return all(static(v) for v in value)
    return True
