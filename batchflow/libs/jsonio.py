"""orjson helpers shared by the stages: a fast path, and a slow one only for what orjson refuses by default."""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterator, Mapping
from typing import Any, BinaryIO

import orjson

JSONDecodeError = orjson.JSONDecodeError
loads = orjson.loads

_LINE = orjson.OPT_APPEND_NEWLINE
# Records from YAML may hold non-string keys (`1: x`) or read-only mappings; orjson must be told of both.
_LENIENT = orjson.OPT_NON_STR_KEYS


def _default(value: Any) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def dumps(value: Any, *, option: int = 0) -> bytes:
    """JSON bytes of ``value``; mappings and non-string keys are accepted (that path costs only when used)."""
    try:
        return orjson.dumps(value, option=option)
    except orjson.JSONEncodeError:
        return orjson.dumps(value, default=_default, option=option | _LENIENT)


def dumps_kept(value: Any) -> bytes:
    """JSON bytes of ``value`` to keep (a dict's key, a set's member): a copy of its own size. The bytes orjson
    returns hold ~4 KB of memory while they live, however short: 100,000 kept keys held 400 MB."""
    return b"%b" % orjson.dumps(value)


def dumps_line(value: Any) -> bytes:
    """One JSON line, newline included."""
    return dumps(value, option=_LINE)


def dumps_str(value: Any) -> str:
    """JSON text of ``value`` as a str (for CSV cells)."""
    return dumps(value).decode()


def dumps_canonical(value: Any) -> bytes:
    """Sorted-key JSON, for hashing."""
    return dumps(value, option=orjson.OPT_SORT_KEYS)


def type_name(value: Any) -> str:
    """The JSON name of a decoded value's type, for messages ("expected an object, got array")."""
    return _TYPE_NAMES.get(type(value), type(value).__name__)


_TYPE_NAMES: dict[type, str] = {
    dict: "object",
    list: "array",
    str: "string",
    int: "number",
    float: "number",
    bool: "boolean",
    type(None): "null",
}


class ArrayError(ValueError):
    """A top-level JSON array could not be read; the message says why."""


_WHITESPACE = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


class _ArrayStream:
    """A window of decoded text over a binary file, consumed element by element."""

    def __init__(self, f: BinaryIO, chunk_size: int) -> None:
        self._f = f
        self._chunk_size = chunk_size
        self._utf8 = codecs.getincrementaldecoder("utf-8-sig")()  # a leading BOM is dropped
        self._buf = ""
        self._pos = 0
        self._eof = False

    def _fill(self) -> None:
        # Read at least as much as is buffered, so re-parsing a value that spans many chunks stays linear.
        data = self._f.read(max(self._chunk_size, len(self._buf) - self._pos))
        self._eof = not data
        try:
            text = self._utf8.decode(data, final=self._eof)
        except UnicodeDecodeError as exc:
            raise ArrayError(f"not valid UTF-8: {exc.reason}") from None
        self._buf = self._buf[self._pos :] + text
        self._pos = 0

    def peek(self) -> str:
        """The next non-whitespace character, or "" at the end of the file."""
        while True:
            match = _WHITESPACE.match(self._buf, self._pos)
            self._pos = match.end() if match else self._pos
            if self._pos < len(self._buf) or self._eof:
                return self._buf[self._pos : self._pos + 1]
            self._fill()

    def take(self, char: str) -> None:
        if self.peek() != char:
            raise ArrayError(f"expected {char!r}, found {self.peek() or 'the end of the file'!r}")
        self._pos += 1

    def value(self) -> Any:
        self.peek()
        while True:
            try:
                value, end = _DECODER.raw_decode(self._buf, self._pos)
            except json.JSONDecodeError as exc:
                if self._eof:
                    raise ArrayError(f"malformed JSON: {exc.msg}") from None
                self._fill()
                continue
            # A number cut by the end of the window ("12" of "1234") parses; read on before trusting it.
            if end < len(self._buf) or self._eof:
                self._pos = end
                return value
            self._fill()


def iter_array(f: BinaryIO, chunk_size: int = 1 << 20) -> Iterator[Any]:
    """The elements of the top-level JSON array in ``f``, streamed; ``ArrayError`` if it is not one."""
    stream = _ArrayStream(f, chunk_size)
    if stream.peek() != "[":
        raise ArrayError("expected a top-level JSON array")
    stream.take("[")
    if stream.peek() == "]":
        stream.take("]")
    else:
        while True:
            yield stream.value()
            if stream.peek() != ",":
                break
            stream.take(",")
        stream.take("]")
    if stream.peek():
        raise ArrayError("extra data after the top-level array")
