"""Running a batch's lines through the model: input JSONL in, output JSONL out, streamed, in input order.

Input lines are `{"key"?, "request", "metadata"?}` (file lines carry a key, inline requests their metadata);
each output line carries the same key/metadata and either `response` or `error` (a google.rpc.Status). A bad
line fails alone: the job goes on and counts it as failed. A fault plan may turn a line into an error line, or
drop or double it, or block or cut its answer (the counts stay those of the lines answered).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from batchflow.emulator.faults.plan import LineFault, LineFaults
from batchflow.emulator.model import deterministic as model
from batchflow.emulator.model.degraded import degrade
from batchflow.emulator.model.media import MediaReader
from batchflow.emulator.wire import proto_json
from batchflow.emulator.wire.errors import ApiError, invalid_argument, line_error
from batchflow.emulator.wire.request_checks import check_dimensions, field
from batchflow.spec import models

Answerer = Callable[[Any, str, MediaReader | None], dict[str, Any]]
_WRITE_BUFFER = 1 << 20


@dataclass(frozen=True)
class LineCounts:
    """How many lines of a batch got a response and how many an error."""

    succeeded: int
    failed: int


def _generate(request: Any, model_name: str, read: MediaReader | None = None) -> dict[str, Any]:
    proto_json.check("gemini", "generate", request, "request")  # as the service parses it, then what it means
    return model.generate(request, model_name, read)


def _embed(request: Any, model_name: str, read: MediaReader | None = None) -> dict[str, Any]:
    proto_json.check("gemini", "embed", request, "request")
    found = models.any_named(model_name)
    embedding = found.embedding if found is not None else None
    if embedding is not None:  # a model of the table: its own sizes (an unknown one: the generic 1..3072)
        check_dimensions(field(request, "outputDimensionality"), embedding.dimensions, models.bare(model_name))
    return model.embed(request, embedding.dimensions[2] if embedding and embedding.format == "request" else None,
                       read, model_name)


ANSWERERS: dict[str, Answerer] = {"generate": _generate, "embed": _embed}


def count_requests(path: Path) -> int:
    """The number of request lines (non-blank lines) in a JSONL file, read in a stream."""
    with open(path, "rb") as f:
        return sum(1 for raw in f if raw.strip())


def run_lines(kind: str, model_name: str, source: Path, dest: Path, faults: LineFaults | None = None,
              read: MediaReader | None = None) -> LineCounts:
    """Answer every line of `source` into `dest`, one output line per input line, in order (unless `faults`);
    `read` resolves the URIs of media parts (without it they are named, not read)."""
    answer = ANSWERERS[kind]
    ok = failed = 0
    with open(source, "rb") as src, open(dest, "wb", buffering=_WRITE_BUFFER) as out:
        for n, raw in enumerate(src):
            if not raw.strip():
                continue
            line = answer_line(raw, answer, model_name, read)
            copies = 1
            fault = faults(identity(line, n)) if faults is not None else None
            if fault is not None:
                line = _with_error(line, fault.error) if fault.error is not None else _degraded(line, fault)
                copies = fault.copies
            out.write((orjson.dumps(line) + b"\n") * copies)
            if "error" in line:
                failed += 1
            else:
                ok += 1
    return LineCounts(succeeded=ok, failed=failed)


def identity(line: dict[str, Any], n: int) -> str:
    """What a line's fault is drawn by: its key, else its metadata's key, else its position."""
    key = line.get("key")
    if key is None and isinstance(line.get("metadata"), dict):
        key = line["metadata"].get("key")
    return f"#{n}" if key is None else str(key)


def _degraded(line: dict[str, Any], fault: LineFault) -> dict[str, Any]:
    """The line with its response blocked or cut, as the fault says (an error line stays as it is)."""
    if "response" not in line:
        return line
    return {**line, "response": degrade(line["response"], fault)}


def _with_error(line: dict[str, Any], error: ApiError) -> dict[str, Any]:
    """The line with an injected error in place of its response (key and metadata kept, in their places)."""
    out = {k: v for k, v in line.items() if k not in ("response", "error", "metadata")}
    out["error"] = line_error(error)
    if "metadata" in line:
        out["metadata"] = line["metadata"]
    return out


def answer_line(raw: bytes, answer: Answerer, model_name: str, read: MediaReader | None = None) -> dict[str, Any]:
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
        out["response"] = answer(line["request"], model_name, read)
    except ApiError as exc:
        out["error"] = line_error(exc)
    if "metadata" in line:
        out["metadata"] = line["metadata"]
    return out
