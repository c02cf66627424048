"""Gemini embedding models on Vertex: the documented line staged on GCS, its answers read back, by the CLI."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.helpers import cli_process, write_spec

from batchflow.emulator import start_in_thread

pytestmark = pytest.mark.gcs


@pytest.fixture
def vertex_emulator(tmp_path: Path, gcs_emulator: str) -> Iterator[str]:
    with start_in_thread(tmp_path / "emulator", job_seconds=0.3) as running:
        yield running.base_url


def _vertex(base_url: str, bucket: str, location: str = "us-central1") -> dict[str, str]:
    return {"type": "vertex", "project": "p", "location": location, "staging": f"gs://{bucket}/staging",
            "base_url": base_url}


def _texts(fs: Any, bucket: str, n: int) -> str:
    fs.pipe(f"{bucket}/in.jsonl", b"".join(json.dumps({"id": f"d{i}", "text": f"word{i % 7} text {i}",
                                                       "title": f"T{i % 3}"}).encode() + b"\n" for i in range(n)))
    return f"gs://{bucket}/in.jsonl"


def _embed_spec(tmp_path: Path, name: str, backend: dict[str, str], source: str, model: str,
                **overrides: Any) -> Path:
    return write_spec(tmp_path, name=name, backend=backend, model=model, task="embed", prompt=None,
                      content="{{ text }}", source={"type": "files", "path": source},
                      embed_config={"output_dimensionality": 768, "task_type": "RETRIEVAL_DOCUMENT",
                                    "title": "{{ title }}"}, **overrides)


def _staged(fs: Any, bucket: str, name: str) -> list[dict[str, Any]]:
    files = sorted(fs.glob(f"{bucket}/staging/{name}/*/input.jsonl"))
    return [json.loads(line) for f in files for line in fs.cat(f).decode().splitlines()]


def test_gemini_embedding_001_stages_the_documented_line_and_reads_its_vectors(
        tmp_path: Path, fs: Any, bucket: str, vertex_emulator: str) -> None:
    spec = _embed_spec(tmp_path, "ge1", _vertex(vertex_emulator, bucket), _texts(fs, bucket, 40),
                       "gemini-embedding-001")
    done = cli_process("run", str(spec))
    assert done.returncode == 0, done.stderr
    staged = _staged(fs, bucket, "ge1")
    assert staged[0] == {"key": "d0", "request": {
        "content": {"parts": [{"text": "word0 text 0"}]},
        "embed_content_config": {"task_type": "RETRIEVAL_DOCUMENT", "title": "T0", "output_dimensionality": 768}}}
    rows = [json.loads(x) for x in (tmp_path / "out/result.jsonl").read_text().splitlines()]
    assert [r["key"] for r in rows] == [f"d{i}" for i in range(40)]
    assert all(r["status"] == "ok" and len(r["embedding"]) == 768 for r in rows)
    assert len({tuple(r["embedding"]) for r in rows}) == 40, "each text its own vector"


def test_gemini_embedding_2_takes_task_and_title_in_the_text_not_in_a_config(
        tmp_path: Path, fs: Any, bucket: str, vertex_emulator: str) -> None:
    spec = _embed_spec(tmp_path, "ge2", _vertex(vertex_emulator, bucket, "us"), _texts(fs, bucket, 6),
                       "gemini-embedding-2")
    done = cli_process("run", str(spec))
    assert done.returncode == 0, done.stderr
    staged = _staged(fs, bucket, "ge2")
    assert staged[1] == {"key": "d1", "request": {"content": {"parts": [{"text": "title: T1 | text: word1 text 1"}]},
                                                  "embed_content_config": {"output_dimensionality": 768}}}
    rows = [json.loads(x) for x in (tmp_path / "out/result.jsonl").read_text().splitlines()]
    assert all(r["status"] == "ok" and len(r["embedding"]) == 768 for r in rows)
    norm = math.sqrt(sum(v * v for v in rows[0]["embedding"]))
    assert norm < 0.99, "a vector cut below 3072 comes back as the service gives it: not normalised"


def test_a_location_the_model_is_not_served_in_is_refused_at_plan_naming_its_locations(
        tmp_path: Path, fs: Any, bucket: str, vertex_emulator: str) -> None:
    spec = _embed_spec(tmp_path, "ge2x", _vertex(vertex_emulator, bucket, "us-central1"), _texts(fs, bucket, 3),
                       "gemini-embedding-2")
    for command in ("plan", "run"):
        done = cli_process(command, str(spec))
        assert done.returncode == 2, (command, done.stderr)
        assert "global, us, eu" in done.stderr, done.stderr
    assert not fs.glob(f"{bucket}/staging/ge2x/*"), "nothing staged"


def test_identical_embedding_requests_are_staged_once_and_answer_every_key(
        tmp_path: Path, fs: Any, bucket: str, vertex_emulator: str) -> None:
    fs.pipe(f"{bucket}/rep.jsonl", b"".join(json.dumps({"id": f"r{i}", "text": f"same {i % 2}", "title": "T"})
                                            .encode() + b"\n" for i in range(10)))
    spec = _embed_spec(tmp_path, "rep", _vertex(vertex_emulator, bucket), f"gs://{bucket}/rep.jsonl",
                       "gemini-embedding-001")
    done = cli_process("run", str(spec))
    assert done.returncode == 0, done.stderr
    assert [line["key"] for line in _staged(fs, bucket, "rep")] == ["r0", "r1"], "one line per distinct request"
    rows = [json.loads(x) for x in (tmp_path / "out/result.jsonl").read_text().splitlines()]
    assert [r["key"] for r in rows] == [f"r{i}" for i in range(10)] and all(r["status"] == "ok" for r in rows)
    assert rows[0]["embedding"] == rows[8]["embedding"] != rows[1]["embedding"]
