"""Running a batch's lines through the model: input JSONL in, output JSONL out, streamed, in input order.

Input lines are `{"key"?, "request", "metadata"?}` (file lines carry a key, inline requests their metadata);
each output line carries the same key/metadata and either `response` or `error` (a google.rpc.Status). A bad
line fails alone: the job goes on and counts it as failed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from batchflow.emulator import model
from batchflow.emulator.errors import ApiError, invalid_argument, line_error

Answerer = Callable[[Any, str], dict[str, Any]]
_WRITE_BUFFER = 1 << 20


@dataclass(frozen=True)
class LineCounts:
    """How many lines of a batch got a response and how many an error."""

    succeeded: int
    failed: int


def _embed(request: Any, _model: str) -> dict[str, Any]:
    return model.embed(request)


ANSWERERS: dict[str, Answerer] = {"generate": model.generate, "embed": _embed}


def count_requests(path: Path) -> int:
    """The number of request lines (non-blank lines) in a JSONL file, read in a stream."""
    with open(path, "rb") as f:
        return sum(1 for raw in f if raw.strip())


def run_lines(kind: str, model_name: str, source: Path, dest: Path) -> LineCounts:
    """Answer every line of `source` into `dest`, one output line per input line, in order."""
    answer = ANSWERERS[kind]
    ok = failed = 0
    with open(source, "rb") as src, open(dest, "wb", buffering=_WRITE_BUFFER) as out:
        for raw in src:
            if not raw.strip():
                continue
            line = answer_line(raw, answer, model_name)
            out.write(orjson.dumps(line))
            out.write(b"\n")
            if "error" in line:
                failed += 1
            else:
                ok += 1
    return LineCounts(succeeded=ok, failed=failed)


def answer_line(raw: bytes, answer: Answerer, model_name: str) -> dict[str, Any]:
    """The output line for one input line; never raises for bad input."""
    try:
        line = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return {"error": line_error(invalid_argument(f"Invalid JSON in input line: {exc}"))}
    if not isinstance(line, dict):
        return {"error": line_error(invalid_argument("Input line must be a JSON object"))}
    out: dict[str, Any] = {}
    if "key" in line:
        out["key"] = line["key"]
    try:
        if "request" not in line:
            raise invalid_argument('Each input line must be {"key": ..., "request": {...}}: no "request" found')
        out["response"] = answer(line["request"], model_name)
    except ApiError as exc:
        out["error"] = line_error(exc)
    if "metadata" in line:
        out["metadata"] = line["metadata"]
    return out
