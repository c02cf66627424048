"""Request lines checked the way Google's proto-JSON parser checks them, against Google's own schemas.

The schemas are `google_schemas.json` (written by `scripts/extract_discovery.py`: Vertex AI's discovery document
and the Gemini API's protos). Each is compiled once into nested closures, one per message, that hold a dict of
their fields under both names proto-JSON accepts (lowerCamel JSON name and snake_case proto name): checking a line
is then a walk over the line itself, with no schema lookups, fast enough for jobs of any size. A refused value
raises `ApiError(400)` worded as the parser words it (`Unknown name "topp" at 'request.generation_config': Cannot
find field.`, `Invalid value at '…' (TYPE_ENUM), "object"`). Only the first error of a line is reported.
What a schema cannot say (roles, dimension limits…) is `request_checks.py`'s, checked after this.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import orjson

from batchflow.emulator.wire.errors import invalid_argument
from batchflow.emulator.wire.request_checks import snake

Check = Callable[[Any], None]
Field = tuple[str, Check, frozenset[type]]  # proto name, check, JSON types that pass without a call

_SCHEMAS = Path(__file__).with_name("google_schemas.json")
_BASE64 = re.compile(r"[A-Za-z0-9+/_-]*={0,2}")
_INT = re.compile(r"-?[0-9]+")
_FLOAT_WORDS = frozenset({"NaN", "Infinity", "-Infinity"})
_RANGES = {"int32": (-(2**31), 2**31 - 1), "uint32": (0, 2**32 - 1),
           "int64": (-(2**63), 2**63 - 1), "uint64": (0, 2**64 - 1)}
_SHOWN_CHARS = 100


class _Refused(Exception):
    """A value the parser refuses; `path` collects field names innermost first while the walk unwinds."""

    def __init__(self, kind: str, detail: str, value: Any = None) -> None:
        super().__init__(detail)
        self.kind = kind  # unknown | value | list | object
        self.detail = detail
        self.value = value
        self.path: list[str] = []

    def message(self, root: str) -> str:
        """The parser's wording, with the path from `root` to the refused value."""
        segments = [root, *reversed(self.path)] if root else list(reversed(self.path))
        if self.kind == "unknown":
            return f"Invalid JSON payload received. Unknown name \"{self.detail}\" at '{_join(segments)}': " \
                   "Cannot find field."
        if self.kind in ("list", "object") and len(segments) > 1:
            why = "Proto field is not repeating, cannot start list." if self.kind == "list" else \
                "Starting an object on a scalar field"
            return f"Invalid JSON payload received. Unknown name \"{segments[-1]}\" at '{_join(segments[:-1])}': {why}"
        return f"Invalid value at '{_join(segments)}' ({self.detail}), {_shown(self.value)}"


def check(surface: str, task: str, request: Any, root: str) -> None:
    """Raise ApiError(400) unless `request` parses as the surface's request message for `task`.

    `root` names where the request sits (`request`, or an inline request's path in a create body).
    """
    try:
        _roots()[surface, task](request)
    except _Refused as refused:
        raise invalid_argument(refused.message(root)) from None


@cache
def _roots() -> dict[tuple[str, str], Check]:
    """The compiled root checks by (surface, task), built on first use."""
    extract = orjson.loads(_SCHEMAS.read_bytes())
    roots: dict[tuple[str, str], Check] = {}
    for surface in ("gemini", "vertex"):
        compiled = compile_schemas(extract[surface]["schemas"])
        for task, name in extract[surface]["roots"].items():
            roots[surface, task] = compiled[name]
    return roots


def compile_schemas(schemas: Mapping[str, Any]) -> dict[str, Check]:
    """One check per named schema; `$ref`s are bound directly to the referenced check (recursion included)."""
    fields: dict[str, dict[str, Field]] = {name: {} for name in schemas}
    compiled = {name: _message(fields[name]) for name in schemas}
    for name, schema in schemas.items():
        for json_name, prop in schema.get("properties", {}).items():
            entry = (snake(json_name), _property(prop, compiled), _always_valid(prop))
            fields[name][json_name] = fields[name][entry[0]] = entry
    return compiled


def _always_valid(prop: Mapping[str, Any]) -> frozenset[type]:
    """The JSON types a field takes without looking at the value: most of a line is plain text and numbers,
    and skipping the call for them keeps the walk about twice as fast."""
    if "$ref" in prop or "enum" in prop or prop.get("format") not in (None, "double", "float"):
        return frozenset()
    return _TRIVIAL.get(prop.get("type"), frozenset())


def _property(prop: Mapping[str, Any], compiled: Mapping[str, Check]) -> Check:
    if "$ref" in prop:
        return compiled[prop["$ref"]]
    kind, fmt = prop.get("type"), prop.get("format")
    if kind == "array":
        return _repeated(_property(prop["items"], compiled))
    if kind == "object":
        values = prop.get("additionalProperties")
        return _map(_property(values, compiled)) if values is not None else _message({})
    if kind == "string" and "enum" in prop:
        return _enum(frozenset(prop["enum"]))
    if kind == "string" and fmt in ("int64", "uint64"):
        return _integer("TYPE_" + fmt.upper(), *_RANGES[fmt])
    if kind == "integer":
        bits = fmt if fmt in _RANGES else "int32"
        return _integer("TYPE_" + bits.upper(), *_RANGES[bits])
    return _SCALARS.get((kind, fmt)) or _SCALARS[kind, None]


def _message(fields: Mapping[str, Field]) -> Check:
    def check_message(value: Any) -> None:
        if type(value) is not dict:
            raise _wrong("TYPE_MESSAGE", value)
        for key, item in value.items():
            entry = fields.get(key)
            if entry is None:
                raise _Refused("unknown", key)
            if item is None or type(item) in entry[2]:  # proto-JSON reads null as "not set"
                continue
            try:
                entry[1](item)
            except _Refused as refused:
                refused.path.append(entry[0])
                raise

    return check_message


def _repeated(item_check: Check) -> Check:
    def check_repeated(value: Any) -> None:
        if type(value) is not list:
            raise _Refused("value", "TYPE_MESSAGE" if type(value) is dict else "TYPE_REPEATED", value)
        for i, item in enumerate(value):
            try:
                item_check(item)
            except _Refused as refused:
                refused.path.append(f"[{i}]")
                raise

    return check_repeated


def _map(value_check: Check) -> Check:
    def check_map(value: Any) -> None:
        if type(value) is not dict:
            raise _wrong("TYPE_MESSAGE", value)
        for key, item in value.items():
            try:
                value_check(item)
            except _Refused as refused:
                refused.path.append(f"[{orjson.dumps(key).decode()}]")
                raise

    return check_map


def _enum(allowed: frozenset[str]) -> Check:
    def check_enum(value: Any) -> None:
        # names are case-sensitive; a number is any value of an open proto3 enum
        if not (value in allowed if type(value) is str else type(value) is int):
            raise _wrong("TYPE_ENUM", value)

    return check_enum


def _integer(type_name: str, low: int, high: int) -> Check:
    def check_integer(value: Any) -> None:
        # proto-JSON takes an integer as a number or a decimal string (int64 is written as a string)
        kind = type(value)
        if kind is int:
            number = value
        elif (kind is str and _INT.fullmatch(value)) or (kind is float and value.is_integer()):
            number = int(value)
        else:
            raise _wrong(type_name, value)
        if not low <= number <= high:
            raise _wrong(type_name, value)

    return check_integer


def _number(type_name: str) -> Check:
    def check_number(value: Any) -> None:
        kind = type(value)
        if kind is float or kind is int:
            return
        if kind is str and (value in _FLOAT_WORDS or _parses_as_float(value)):
            return
        raise _wrong(type_name, value)

    return check_number


def _string(value: Any) -> None:
    if type(value) is not str:
        raise _wrong("TYPE_STRING", value)


def _bytes(value: Any) -> None:
    if type(value) is not str or not _BASE64.fullmatch(value):
        raise _wrong("TYPE_BYTES", value)


def _boolean(value: Any) -> None:
    if type(value) is not bool:
        raise _wrong("TYPE_BOOL", value)


def _anything(value: Any) -> None:
    """google.protobuf.Value: any JSON at all."""


_SCALARS: dict[tuple[Any, Any], Check] = {
    ("string", None): _string, ("string", "byte"): _bytes, ("boolean", None): _boolean, ("any", None): _anything,
    ("number", None): _number("TYPE_DOUBLE"), ("number", "double"): _number("TYPE_DOUBLE"),
    ("number", "float"): _number("TYPE_FLOAT"),
}


_TRIVIAL: dict[Any, frozenset[type]] = {"string": frozenset({str}), "boolean": frozenset({bool}),
                                        "number": frozenset({int, float}), "any": frozenset({str, int, float, bool,
                                                                                              list, dict})}


def _wrong(type_name: str, value: Any) -> _Refused:
    """The refusal of a value of the wrong JSON shape for its field."""
    if type(value) is list:
        return _Refused("list", type_name, value)
    if type(value) is dict and type_name != "TYPE_MESSAGE":
        return _Refused("object", type_name, value)
    return _Refused("value", type_name, value)


def _parses_as_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _join(segments: list[str]) -> str:
    """`["request", "contents", "[0]", "parts"]` -> `request.contents[0].parts`."""
    out = ""
    for segment in segments:
        out += segment if segment.startswith("[") or not out else "." + segment
    return out


def _shown(value: Any) -> str:
    text = orjson.dumps(value).decode()
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "…"
