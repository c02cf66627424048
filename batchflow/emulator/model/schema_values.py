"""Deterministic JSON values that satisfy a response schema.

Two dialects reach the model: Gemini's `Schema` (`responseSchema`: upper-case `type`, `nullable`,
`propertyOrdering`) and JSON Schema (`responseJsonSchema`: lower-case `type`, `$ref`/`$defs`, `const`, type
lists). Both are read by the same walker; choices (enum members, numbers, words) come from a hash of the
request and the path inside the schema, so the same request always gets the same value.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

_WORDS = ("alpha", "amber", "birch", "cobalt", "delta", "ember", "fjord", "garnet", "harbor", "indigo",
          "juniper", "kestrel", "lumen", "meadow", "nectar", "onyx", "prairie", "quartz", "raven", "sierra",
          "tundra", "umber", "velvet", "willow", "xenon", "yarrow", "zephyr", "basalt", "cedar", "dune")
_MAX_DEPTH = 12  # a recursive $ref must end somewhere; deeper optional parts are left out


class SchemaError(ValueError):
    """The schema cannot be satisfied or is not a schema."""


def sample(schema: Any, seed: bytes) -> Any:
    """A JSON value satisfying `schema`, chosen deterministically from `seed`."""
    if not isinstance(schema, Mapping):
        raise SchemaError("the response schema must be an object")
    return _Walker(schema, seed).value(schema, "$", 0)


class _Walker:
    def __init__(self, root: Mapping[str, Any], seed: bytes) -> None:
        self.root = root
        self.seed = seed

    def pick(self, path: str, n: int) -> int:
        """A stable choice in range(n) for the node at `path`."""
        digest = hashlib.blake2b(self.seed + path.encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") % max(n, 1)

    def value(self, node: Any, path: str, depth: int) -> Any:
        if not isinstance(node, Mapping):
            raise SchemaError(f"schema at {path} is not an object")
        node = self._resolve(node, path)
        if "const" in node:
            return node["const"]
        enum = node.get("enum")
        if isinstance(enum, list) and enum:
            return enum[self.pick(path, len(enum))]
        for key in ("anyOf", "oneOf", "allOf"):
            options = node.get(key) or node.get(_snake(key))
            if isinstance(options, list) and options:
                # the first non-null branch: a value of one branch satisfies anyOf/oneOf (and, for the
                # common single-element allOf wrapper, allOf)
                branch = next((o for o in options if _type_of(o) != "null"), options[0])
                return self.value(branch, f"{path}/{key}", depth + 1)
        return self._typed(node, _type_of(node), path, depth)

    def _resolve(self, node: Mapping[str, Any], path: str) -> Mapping[str, Any]:
        ref = node.get("$ref")
        if not isinstance(ref, str):
            return node
        target: Any = self.root
        for part in ref.removeprefix("#/").split("/") if ref != "#" else []:
            if not isinstance(target, Mapping) or part not in target:
                raise SchemaError(f"unresolvable $ref {ref!r} at {path}")
            target = target[part]
        if not isinstance(target, Mapping):
            raise SchemaError(f"$ref {ref!r} at {path} is not a schema")
        return target

    def _typed(self, node: Mapping[str, Any], kind: str, path: str, depth: int) -> Any:
        if kind == "object":
            return self._object(node, path, depth)
        if kind == "array":
            return self._array(node, path, depth)
        if kind == "integer":
            return self._integer(node, path)
        if kind == "number":
            return self._number(node, path)
        if kind == "boolean":
            return self.pick(path, 2) == 1
        if kind == "null":
            return None
        return self._string(node, path)

    def _object(self, node: Mapping[str, Any], path: str, depth: int) -> dict[str, Any]:
        props = node.get("properties") or {}
        if not isinstance(props, Mapping):
            raise SchemaError(f"properties at {path} is not an object")
        required = set(node.get("required") or ())
        order = node.get("propertyOrdering") or node.get("property_ordering") or list(props)
        names = [n for n in order if n in props] + [n for n in props if n not in order]
        if depth >= _MAX_DEPTH:
            names = [n for n in names if n in required]
        return {name: self.value(props[name], f"{path}/{name}", depth + 1) for name in names}

    def _array(self, node: Mapping[str, Any], path: str, depth: int) -> list[Any]:
        items = node.get("items")
        if not isinstance(items, Mapping):
            return []
        low = int(node.get("minItems") or node.get("min_items") or 0)
        high = node.get("maxItems") or node.get("max_items")
        count = max(low, 1 + self.pick(path + "#n", 3)) if depth < _MAX_DEPTH else low
        if high is not None:
            count = min(count, int(high))
        return [self.value(items, f"{path}/{i}", depth + 1) for i in range(count)]

    def _bounds(self, node: Mapping[str, Any]) -> tuple[float, float]:
        low = node.get("minimum", 0)
        high = node.get("maximum", max(float(low), 0.0) + 100)
        if float(high) < float(low):
            raise SchemaError(f"maximum {high} is below minimum {low}")
        return float(low), float(high)

    def _integer(self, node: Mapping[str, Any], path: str) -> int:
        low, high = self._bounds(node)
        first, last = int(-(-low // 1)), int(high // 1)
        if last < first:
            raise SchemaError(f"no integer between {low} and {high}")
        return first + self.pick(path, last - first + 1)

    def _number(self, node: Mapping[str, Any], path: str) -> float:
        low, high = self._bounds(node)
        value = round(low + (high - low) * self.pick(path, 10_001) / 10_000, 4)  # short, readable numbers
        return min(max(value, low), high)  # ...unless rounding stepped outside the bounds

    def _string(self, node: Mapping[str, Any], path: str) -> str:
        fmt = node.get("format")
        if fmt == "date-time":
            return f"2025-{1 + self.pick(path, 12):02d}-{1 + self.pick(path + 'd', 28):02d}T12:00:00Z"
        if fmt == "date":
            return f"2025-{1 + self.pick(path, 12):02d}-{1 + self.pick(path + 'd', 28):02d}"
        text = f"{_WORDS[self.pick(path, len(_WORDS))]} {_WORDS[self.pick(path + 'w', len(_WORDS))]}"
        low = int(node.get("minLength") or node.get("min_length") or 0)
        high = node.get("maxLength") or node.get("max_length")
        text = text.ljust(low, "x")
        return text[: int(high)] if high is not None else text


def _type_of(node: Any) -> str:
    """The lower-case type of a schema node in either dialect, inferred when absent."""
    if not isinstance(node, Mapping):
        return "string"
    kind = node.get("type")
    if isinstance(kind, list):  # JSON Schema: ["string", "null"] -> the first non-null member
        kind = next((k for k in kind if str(k).lower() != "null"), "null")
    if isinstance(kind, str) and kind.upper() != "TYPE_UNSPECIFIED":
        return kind.lower()
    if "properties" in node:
        return "object"
    if "items" in node:
        return "array"
    return "string"


def _snake(camel: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in camel)
