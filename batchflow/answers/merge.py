"""Collected results + shard manifests -> one output row per input record, in input order."""

from __future__ import annotations

import hashlib
import json
import math
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from batchflow.answers.keep import answer_lines
from batchflow.errors import StateError
from batchflow.libs.gc_tuning import relaxed_gc
from batchflow.logs import Progress
from batchflow.spec import models
from batchflow.spec.spec import Spec
from batchflow.state.shard_files import records
from batchflow.state.state import State


@dataclass
class Tally:
    rows: int = 0
    ok: int = 0

    @property
    def failed(self) -> int:
        return self.rows - self.ok


def output_fingerprint(spec: Spec) -> str:
    """Identity of the output as the spec asks for it now; a change means merge again (no API call)."""
    blob = json.dumps({"output": spec.raw.get("output"), "task": spec.task}, sort_keys=True, default=str)
    return hashlib.blake2b(blob.encode(), digest_size=12).hexdigest()


def rows(spec: Spec, state: State, root: Path, tally: Tally) -> Iterator[dict[str, Any]]:
    """The output rows, part by part, from the generation's kept answers (line for line with the records)."""
    tally.rows = tally.ok = 0
    make = _row_maker(spec)
    progress = Progress("merging")
    loads = orjson.loads
    with relaxed_gc():
        for index, answers in answer_lines(root, state):
            part = state.parts[index]
            progress.tick(rows=tally.rows, part=index, parts=len(state.parts))
            try:
                for record, answer in zip(records(root / part.manifest, state.format), answers, strict=True):
                    found = loads(answer)
                    row = make(found.pop("key"), record, found)
                    tally.rows += 1
                    tally.ok += row["status"] == "ok"
                    yield row
            except (ValueError, KeyError) as exc:  # zip's strict mismatch and orjson's errors are ValueErrors
                raise StateError(f"{root / part.manifest}: the part's records and kept answers do not match "
                                 f"({exc}); move the state away to start over") from None


def make_row(spec: Spec, key: str, record: Any, answer: dict[str, Any]) -> dict[str, Any]:
    """One output row (docs/spec.md, "An output row") from a kept answer."""
    return _row_maker(spec)(key, record, answer)


_MakeRow = Callable[[str, Any, dict[str, Any]], dict[str, Any]]


def _row_maker(spec: Spec) -> _MakeRow:
    """``make_row`` for one spec: what the spec decides is decided once, not once per row."""
    embed, parse = spec.task == "embed", spec.output.parse
    vector = _vector_maker(spec.output.model or models.bare(spec.model), spec.output.normalize)
    with_response, with_record = spec.output.include_response, spec.output.include_record

    def make(key: str, record: Any, answer: dict[str, Any]) -> dict[str, Any]:
        response = answer.get("response")
        if response is None:
            row = {"key": key, "status": "error", "error": answer.get("error"), "attempts": answer.get("attempts", 0)}
        else:
            row = {"key": key, **(vector(response) if embed else _generated(response, parse))}
            if with_response:
                row["response"] = response
            row["attempts"] = answer.get("attempts", 0)
        if with_record:
            row["record"] = record
        return row

    return make


def _generated(response: dict[str, Any], parse: str) -> dict[str, Any]:
    candidates = response.get("candidates") or []
    if not candidates:
        reason = (response.get("promptFeedback") or {}).get("blockReason")
        if reason:  # the prompt was refused: the same request would be again, so it is kept, not retried
            return {"status": "error", "error": {"code": None, "message": f"blocked: {reason} "
                                                                          "(promptFeedback.blockReason); not retried"}}
        return {"status": "error", "error": {"code": None, "message": "no answer: no candidates"}}
    first = candidates[0]
    parts = (first.get("content") or {}).get("parts") or []
    if len(parts) == 1 and not parts[0].get("thought") and type(text := parts[0].get("text", "")) is str:
        pass  # the usual answer, one text part: what the join below gives, without it
    else:
        text = "".join(p.get("text", "") for p in parts if not p.get("thought"))
    row: dict[str, Any] = {"status": "ok", "text": text}
    if parse == "json":
        try:
            row["parsed"] = orjson.loads(text)
        except orjson.JSONDecodeError:
            row["status"] = "parse_error"
    row["finish_reason"] = first.get("finishReason")
    row["usage"] = _usage(response.get("usageMetadata") or {})
    return row


def _usage(meta: dict[str, Any]) -> dict[str, int]:
    return {"prompt_tokens": int(meta.get("promptTokenCount", 0)),
            "output_tokens": int(meta.get("candidatesTokenCount", 0)),
            "total_tokens": int(meta.get("totalTokenCount", 0))}


def _vector_maker(model: str, normalize: bool) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """An embedding row's fields from a response: the vector (L2-normalised as float32 with ``output.normalize``),
    its size and the model that made it."""

    def vector(response: dict[str, Any]) -> dict[str, Any]:
        emb = response.get("embedding") or (response.get("embeddings") or [{}])[0]
        values = emb.get("values")
        if not isinstance(values, list):
            return {"status": "error", "error": {"code": None, "message": "no embedding in the response"}}
        return {"status": "ok", "embedding": normalized(values) if normalize else values,
                "dimensions": len(values), "model": model}

    return vector


def normalized(values: list[float]) -> list[float]:
    """``values`` scaled to unit length, each rounded to float32 (what vector stores keep); a zero vector as is."""
    norm = math.sqrt(math.fsum(v * v for v in values))
    return array("f", (v / norm for v in values)).tolist() if norm else array("f", values).tolist()
