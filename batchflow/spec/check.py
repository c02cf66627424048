"""Checking a spec: its version first, then the JSON Schema, every problem at its file:line:col."""

from __future__ import annotations

import difflib
import functools
import json
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, ValidationError
from jsonschema.exceptions import best_match

from batchflow.spec.reader import InvalidSpec, Problem, Reader, join_path

SPEC_VERSION = 1

SCHEMA_PATH = Path(__file__).with_name("spec.schema.json")


@functools.cache
def spec_schema() -> dict[str, Any]:
    """The spec's JSON Schema (draft 2020-12), as shipped in ``batchflow/spec.schema.json``."""
    schema: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return schema


# --- checking -----------------------------------------------------------------------------------------------


def check_version(doc: Reader, label: str) -> None:
    if not isinstance(doc.data, dict):
        got = "an empty file" if doc.data is None else _describe(doc.data)
        raise InvalidSpec([f"{label}:1:1: the spec must be a mapping of keys to values, got {got}"])
    version = doc.data.get("version")
    if type(version) is int and version == SPEC_VERSION:
        return
    line, col = doc.where("version")
    got = "no version" if "version" not in doc.data else str(version) if type(version) is int else _describe(version)
    raise InvalidSpec([f"{label}:{line}:{col}: version: batchflow supports spec version {SPEC_VERSION}, got {got}"])


@functools.cache
def _validator() -> Draft202012Validator:
    return Draft202012Validator(spec_schema())


def schema_problems(doc: Reader) -> list[Problem]:
    return [p for error in _validator().iter_errors(doc.data) for p in _explain(error, doc)]


def _explain(error: ValidationError, doc: Reader) -> list[Problem]:
    """One schema error as problems: at the right line, with the spec's path and a message for a human."""
    dotted = ".".join(str(p) for p in error.absolute_path)
    schema = error.schema if isinstance(error.schema, dict) else {}
    hint = schema.get("errorMessage")
    instance = error.instance
    if error.validator == "additionalProperties" and isinstance(instance, dict):
        allowed = list(schema.get("properties", {}))
        extra = [join_path(dotted, k) for k in instance if k not in allowed]
        return [(*doc.where(sub, key=True), sub, _unknown(sub.rpartition(".")[2], allowed)) for sub in extra]
    if error.validator == "required" and isinstance(instance, dict):
        missing = [k for k in error.validator_value if k not in instance]
        return [(*doc.where(dotted, key=True), dotted, hint or f"missing required key '{k}'") for k in missing]
    if error.validator == "not":
        return [(*doc.where(dotted, key=True), dotted, hint or "not allowed here")]
    if hint:
        got = "" if isinstance(instance, dict | list) else f", got {_describe(instance)}"
        return [(*doc.where(dotted, key=isinstance(instance, dict)), dotted, hint + got)]
    if error.context:  # anyOf / oneOf: the branch that came closest says the most
        return _explain(best_match(error.context), doc)
    return [(*doc.where(dotted, key=isinstance(instance, dict)), dotted, _message(error))]


_TYPES = {
    "integer": "an integer",
    "number": "a number",
    "string": "a string",
    "boolean": "true or false",
    "object": "a mapping",
    "array": "a list",
    "null": "null",
}


def _message(error: ValidationError) -> str:
    kind, value, got = error.validator, error.validator_value, _describe(error.instance)
    if kind == "type":
        expected = " or ".join(_TYPES.get(t, t) for t in ([value] if isinstance(value, str) else value))
        return f"expected {expected}, got {got}"
    if kind == "enum":
        close = difflib.get_close_matches(str(error.instance), [str(v) for v in value], 1, 0.6)
        return f"expected one of {', '.join(map(str, value))}; got {got}" + (
            f" (did you mean '{close[0]}'?)" if close else ""
        )
    if kind in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        relation = {"minimum": "at least", "exclusiveMinimum": "more than", "maximum": "at most"}
        return f"expected {relation.get(str(kind), 'less than')} {value}, got {got}"
    if kind in ("minLength", "minItems"):
        return "must not be empty" if value == 1 else f"must have at least {value}, got {got}"
    if kind == "maxLength":
        return f"must be at most {value} characters long"
    if kind == "pattern":
        return f"{got} does not match {value}"
    return str(error.message)


def _unknown(key: str, allowed: list[str]) -> str:
    close = difflib.get_close_matches(key, allowed, 1, 0.6)
    if close:
        return f"unknown key '{key}' (did you mean '{close[0]}'?)"
    return f"unknown key '{key}' (expected one of: {', '.join(allowed)})"


def _describe(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return "null" if value is None else str(value).lower()
    if isinstance(value, int | float):
        return f"{'integer' if isinstance(value, int) else 'number'} {value}"
    if isinstance(value, str):
        return f"string {value if len(value) <= 40 else value[:37] + '...'!r}"
    return "a mapping" if isinstance(value, dict) else "a list" if isinstance(value, list) else type(value).__name__


def format_problem(label: str, problem: Problem) -> str:
    line, col, dotted, message = problem
    return f"{label}:{line}:{col}: {dotted}: {message}" if dotted else f"{label}:{line}:{col}: {message}"


