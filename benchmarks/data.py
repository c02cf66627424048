"""The benchmark's inputs: generated records, the specs that read them, and a finished state to merge.

Everything here is deterministic (seeded), so two runs of the benchmark measure the same bytes.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import orjson
import yaml

from batchflow.spec.spec import Spec, load_spec
from batchflow.state.shard_files import request_key
from batchflow.state.state import COLLECTED, SUCCEEDED, State, StateStore

_WORDS = ("the", "battery", "lasts", "all", "day", "but", "screen", "is", "too", "dim", "outside", "great",
          "value", "for", "money", "shipping", "was", "slow", "and", "box", "arrived", "damaged", "would",
          "buy", "again", "not", "worth", "price", "sound", "quality", "surprisingly", "good", "fits", "well")
_TITLES = ("Great", "Not bad", "Terrible", "Okay for the price", "Would not recommend", "Love it")
_LANGS = ("en", "en", "en", "de", "fr", "es")
_SENTIMENTS = ("positive", "negative", "neutral")

PROMPT = "Classify the sentiment of this review as positive, negative or neutral.\nReview: {{ text }}"
SYSTEM = "You are a careful annotator. Answer with JSON only."
REQUEST_TEXT = "Title: {{ title }}\nLanguage: {{ lang }}\nReview: {{ text }}"
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"sentiment": {"type": "string", "enum": list(_SENTIMENTS)},
                   "confidence": {"type": "number"}},
    "required": ["sentiment"],
}
GENERATION_CONFIG: dict[str, Any] = {"temperature": 0, "response_mime_type": "application/json",
                                     "response_schema": SCHEMA}
# The same config as the service wants it written (what google-genai sends): camelCase, upper-case schema types.
WIRE_CONFIG: dict[str, Any] = {
    "temperature": 0.0, "responseMimeType": "application/json",
    "responseSchema": {"properties": {"sentiment": {"enum": list(_SENTIMENTS), "type": "STRING"},
                                      "confidence": {"type": "NUMBER"}},
                       "property_ordering": ["sentiment", "confidence"], "required": ["sentiment"], "type": "OBJECT"}}


def write_records(path: Path, records: int, seed: int = 7) -> int:
    """``records`` review-like JSON lines of ~290 bytes each; returns the file's size in bytes."""
    rng = random.Random(seed)
    texts = [" ".join(rng.choices(_WORDS, k=rng.randint(22, 38))) for _ in range(997)]
    buf = bytearray()
    with open(path, "wb") as fh:
        for i in range(1, records + 1):
            buf += orjson.dumps({"id": f"r{i:09d}", "title": _TITLES[i % 6], "text": f"{texts[i % 997]} #{i}",
                                 "rating": i % 5 + 1, "lang": _LANGS[i % 6], "helpful": i % 37,
                                 "verified": i % 3 == 0}, option=orjson.OPT_APPEND_NEWLINE)
            if len(buf) > 1 << 20:
                fh.write(buf)
                buf.clear()
        fh.write(buf)
    return path.stat().st_size


def write_spec(directory: Path, name: str, data: Path, kind: str, **extra: Any) -> Path:
    """A spec over ``data``: ``kind`` is ``prompt`` (one field) or ``request`` (system, schema, three fields)."""
    spec: dict[str, Any] = {"version": 1, "name": name, "backend": {"type": "local"},
                            "model": "gemini-2.5-flash",
                            "source": {"type": "files", "path": str(data)}, "key": "{{ id }}"}
    if kind == "prompt":
        spec["prompt"] = PROMPT
    else:
        spec["request"] = {"contents": [{"role": "user", "parts": [{"text": REQUEST_TEXT}]}],
                           "system_instruction": {"parts": [{"text": SYSTEM}]},
                           "generation_config": GENERATION_CONFIG}
    spec["output"] = {"type": "files", "path": str(directory / f"{name}.out.jsonl")}
    spec["state"] = {"dir": str(directory / "state")}
    spec.update(extra)
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def floor_request(kind: str, record: dict[str, Any]) -> dict[str, Any]:
    """The request line a user would build by hand (the same bytes batchflow writes for that spec; a test checks
    it)."""
    if kind == "prompt":
        text = ("Classify the sentiment of this review as positive, negative or neutral.\nReview: "
                + record["text"])
        return {"key": record["id"], "request": {"contents": [{"role": "user", "parts": [{"text": text}]}]}}
    text = f"Title: {record['title']}\nLanguage: {record['lang']}\nReview: {record['text']}"
    return {"key": record["id"], "request": {"contents": [{"role": "user", "parts": [{"text": text}]}],
                                             "systemInstruction": {"parts": [{"text": SYSTEM}]},
                                             "generationConfig": WIRE_CONFIG}}


def finish_state(spec: Spec, state: State) -> State:
    """Turn a prepared state into a finished, collected one: a result line per request, as ``collect`` writes."""
    root = StateStore(spec.state_dir / spec.name).dir
    (root / state.gen_dir / "results").mkdir(exist_ok=True)
    for shard in state.shards:
        job = shard.jobs[0]
        job.name, job.status, job.ended = f"batches/bench-{shard.index}", COLLECTED, SUCCEEDED
        job.results = f"{state.gen_dir}/results/shard-{shard.index:05d}-j1.jsonl"
        job.ok = shard.count
        _write_results(root / shard.requests, root / job.results)
        shard.done = True
    state.merged = None
    StateStore(root).save(state)
    return state


def _write_results(requests: Path, out: Path) -> None:
    buf = bytearray()
    with open(requests, "rb") as src, open(out, "wb") as dst:
        for n, line in enumerate(src):
            key = request_key(line)
            answer = orjson.dumps({"sentiment": _SENTIMENTS[n % 3], "confidence": 0.5 + n % 50 / 100}).decode()
            buf += orjson.dumps({"key": key, "response": {
                "candidates": [{"content": {"role": "model", "parts": [{"text": answer}]}, "finishReason": "STOP"}],
                "usageMetadata": {"promptTokenCount": 41 + n % 17, "candidatesTokenCount": 9,
                                  "totalTokenCount": 50 + n % 17},
                "modelVersion": "gemini-2.5-flash"}}, option=orjson.OPT_APPEND_NEWLINE)
            if len(buf) > 1 << 20:
                dst.write(buf)
                buf.clear()
        dst.write(buf)


def load(path: Path) -> Spec:
    return load_spec(path, environ={})
