"""AIP-160 list filters: a tokenizer and a recursive-descent parser into a small tree, with no field semantics.

The grammar is AIP-160's (google.aip.dev/160 and its EBNF), lowest precedence first:

    expression  := sequence {"AND" sequence}
    sequence    := factor {factor}               juxtaposed factors must all hold, as with AND
    factor      := term {"OR" term}              OR binds tighter than AND: `a AND b OR c` is `a AND (b OR c)`
    term        := ["NOT" | "-"] simple
    simple      := restriction | "(" expression ")"
    restriction := member comparator value       comparator: = != < <= > >= and the has-operator `:`

A value is a "quoted" or 'quoted' string or bare text (`JOB_STATE_FAILED`, `*`); a member is a dotted name
(`labels.team`). What the fields mean, and which comparators each takes, is the caller's (`vertex.py` binds them
with `compile_filter`). Bare global restrictions and function calls are not supported here: the lists this
emulator serves document neither, so both are a 400 like any malformed filter.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from batchflow.emulator.wire.errors import ApiError, invalid_argument

COMPARATORS = frozenset({"=", "!=", "<", "<=", ">", ">=", ":"})
_KEYWORDS = frozenset({"AND", "OR", "NOT"})
_TOKENS = re.compile(r"""
    (?P<space>\s+)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<comparator><=|>=|!=|[<>=:])
  | (?P<paren>[()])
  | (?P<text>[^\s()<>=!:"']+)
  | (?P<bad>.)
""", re.VERBOSE | re.DOTALL)
_MEMBER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[^.\s]+)*")
_ESCAPE = re.compile(r"\\(.)", re.DOTALL)

T = TypeVar("T")


@dataclass(frozen=True)
class Restriction:
    """`member comparator value`, e.g. `labels.team = "a"`."""

    member: str
    comparator: str
    value: str


@dataclass(frozen=True)
class Not:
    """`NOT x` or `-x`."""

    operand: Node


@dataclass(frozen=True)
class And:
    """`a AND b` (or `a b`): every operand holds."""

    operands: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    """`a OR b`: some operand holds."""

    operands: tuple[Node, ...]


Node = Restriction | Not | And | Or


@dataclass(frozen=True)
class _Token:
    kind: str  # string | comparator | paren | text
    text: str
    position: int  # 1-based column, as an error names it


def parse(text: str) -> Node | None:
    """The tree of a filter; None for an empty one. Raises ApiError(400) for a malformed filter."""
    tokens = tokenize(text)
    if not tokens:
        return None
    return _Parser(text, tokens).parse()


def tokenize(text: str) -> list[_Token]:
    """The filter's tokens, whitespace dropped; 400 for an unterminated string or a stray character."""
    tokens = []
    for found in _TOKENS.finditer(text):
        kind = str(found.lastgroup)
        if kind == "bad":
            raise _error(text, found.start() + 1, f"unexpected {found.group()!r}"
                         + (" (unterminated string)" if found.group() in "\"'" else ""))
        if kind != "space":
            tokens.append(_Token(kind, found.group(), found.start() + 1))
    return tokens


def compile_filter(node: Node | None, bind: Callable[[Restriction], Callable[[T], bool]]) -> Callable[[T], bool]:
    """A predicate for a parsed filter; `bind` turns each restriction into a test (and refuses what it cannot)."""
    if node is None:
        return lambda item: True
    if isinstance(node, Restriction):
        return bind(node)
    if isinstance(node, Not):
        inner = compile_filter(node.operand, bind)
        return lambda item: not inner(item)
    parts = [compile_filter(operand, bind) for operand in node.operands]
    if isinstance(node, And):
        return lambda item: all(part(item) for part in parts)
    return lambda item: any(part(item) for part in parts)


def wildcard_match(pattern: str, value: str) -> bool:
    """Whether `value` matches `pattern`, where `*` stands for any run of characters (AIP-160's wildcard)."""
    regex = ".*".join(re.escape(piece) for piece in pattern.split("*"))
    return re.fullmatch(regex, value, re.DOTALL) is not None


class _Parser:
    """One pass over the tokens; each method parses one rule of the grammar above."""

    def __init__(self, text: str, tokens: list[_Token]) -> None:
        self._text = text
        self._tokens = tokens
        self._next = 0

    def parse(self) -> Node:
        node = self._expression()
        if self._peek() is not None:
            raise self._unexpected()
        return node

    def _expression(self) -> Node:
        parts = [self._sequence()]
        while self._take_keyword("AND"):
            parts.append(self._sequence())
        return parts[0] if len(parts) == 1 else And(tuple(parts))

    def _sequence(self) -> Node:
        parts = [self._factor()]
        while self._starts_term():
            parts.append(self._factor())
        return parts[0] if len(parts) == 1 else And(tuple(parts))

    def _factor(self) -> Node:
        parts = [self._term()]
        while self._take_keyword("OR"):
            parts.append(self._term())
        return parts[0] if len(parts) == 1 else Or(tuple(parts))

    def _term(self) -> Node:
        if self._take_keyword("NOT"):
            return Not(self._simple())
        token = self._peek()
        if token is not None and token.kind == "text" and token.text.startswith("-"):
            self._next += 1
            if token.text == "-":  # `-(a OR b)`
                return Not(self._simple())
            return Not(self._restriction(_Token("text", token.text[1:], token.position + 1)))
        return self._simple()

    def _simple(self) -> Node:
        token = self._peek()
        if token is not None and token.text == "(":
            self._next += 1
            node = self._expression()
            closing = self._peek()
            if closing is None or closing.text != ")":
                raise self._unexpected("expected ')'")
            self._next += 1
            return node
        if token is None or token.kind != "text" or token.text in _KEYWORDS:
            raise self._unexpected("expected a field name or '('")
        self._next += 1
        return self._restriction(token)

    def _restriction(self, member: _Token) -> Restriction:
        if not _MEMBER.fullmatch(member.text):
            raise _error(self._text, member.position, f"{member.text!r} is not a field name")
        comparator = self._peek()
        if comparator is None or comparator.kind != "comparator":
            raise self._unexpected(f"expected a comparator ({', '.join(sorted(COMPARATORS))}) after {member.text!r}")
        self._next += 1
        value = self._peek()
        if value is None or value.kind not in ("string", "text") or value.text in _KEYWORDS:
            raise self._unexpected(f"expected a value after {member.text}{comparator.text}")
        self._next += 1
        return Restriction(member.text, comparator.text, _unquote(value))

    def _starts_term(self) -> bool:
        token = self._peek()
        return token is not None and (token.text == "(" or (token.kind == "text" and token.text not in ("AND", "OR")))

    def _take_keyword(self, keyword: str) -> bool:
        token = self._peek()
        if token is not None and token.kind == "text" and token.text == keyword:
            self._next += 1
            return True
        return False

    def _peek(self) -> _Token | None:
        return self._tokens[self._next] if self._next < len(self._tokens) else None

    def _unexpected(self, expected: str = "") -> ApiError:
        token = self._peek()
        where = len(self._text) + 1 if token is None else token.position
        seen = "end of filter" if token is None else repr(token.text)
        return _error(self._text, where, f"unexpected {seen}" + (f", {expected}" if expected else ""))


def _unquote(token: _Token) -> str:
    if token.kind != "string":
        return token.text
    return _ESCAPE.sub(r"\1", token.text[1:-1])


def _error(text: str, position: int, why: str) -> ApiError:
    return invalid_argument(f"Invalid filter {text!r}: {why} at position {position}.")
