"""Embedding a corpus on Vertex with the Gemini embedding models, through the CLI as a user runs it: the
documented lines staged on GCS, one job for 3,000 texts, vectors typed for parquet and BigQuery, re-runs that
send only what changed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.helpers import cli_process, write_spec

from batchflow.emulator import start_in_thread

pytestmark = pytest.mark.gcs

TEXTS = 3_000


@pytest.fixture
def vertex_emulator(tmp_path: Path, gcs_emulator: str) -> Iterator[str]:
    with start_in_thread(tmp_path / "emulator", job_seconds=0.3) as running:
        yield running.base_url


def _write_texts(fs: Any, bucket: str, start: int, stop: int, existing: bytes = b"") -> None:
    fs.pipe(f"{bucket}/corpus.jsonl", existing + b"".join(
        json.dumps({"id": f"doc-{i:05d}", "text": f"passage {i} about topic {i % 17}",
                    "title": f"Chapter {i % 9}"}).encode() + b"\n" for i in range(start, stop)))


def _spec(tmp_path: Path, base_url: str, bucket: str, output: dict[str, Any], dims: int = 768,
          model: str = "gemini-embedding-001", location: str = "us-central1") -> Path:
    return write_spec(tmp_path, name="corpus", model=model, task="embed", prompt=None, content="{{ text }}",
                      backend={"type": "vertex", "project": "p", "location": location,
                               "staging": f"gs://{bucket}/staging", "base_url": base_url},
                      source={"type": "files", "path": f"gs://{bucket}/corpus.jsonl"},
                      embed_config={"output_dimensionality": dims, "task_type": "RETRIEVAL_DOCUMENT",
                                    "title": "{{ title }}"},
                      output=output)


def _submitted(logs: str) -> list[int]:
    """The requests in each job a run's JSON logs say it submitted."""
    events = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    return [e["requests"] for e in events if e["event"] == "job submitted"]


def _staged_lines(fs: Any, bucket: str) -> list[list[dict[str, Any]]]:
    files = sorted(fs.glob(f"{bucket}/staging/corpus/*/input.jsonl"))
    return [[json.loads(x) for x in fs.cat(f).decode().splitlines()] for f in files]


def test_3000_texts_are_one_job_of_documented_lines_and_a_typed_parquet_and_rerun_only_what_changed(
        tmp_path: Path, fs: Any, bucket: str, vertex_emulator: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    _write_texts(fs, bucket, 0, TEXTS)
    output = {"type": "files", "path": "out/vectors.parquet", "include_record": False}
    spec = _spec(tmp_path, vertex_emulator, bucket, output)
    done = cli_process("run", str(spec))
    assert done.returncode == 0, done.stderr
    assert _submitted(done.stderr) == [TEXTS], "one job, not one per 30,000"
    (staged,) = _staged_lines(fs, bucket)
    assert len(staged) == TEXTS
    assert staged[5] == {"key": "doc-00005", "request": {
        "content": {"parts": [{"text": "passage 5 about topic 5"}]},
        "embed_content_config": {"task_type": "RETRIEVAL_DOCUMENT", "title": "Chapter 5",
                                 "output_dimensionality": 768}}}

    table = pq.read_table(tmp_path / "out/vectors.parquet")
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), 768)
    assert table.num_rows == TEXTS and table.column("key").to_pylist()[:2] == ["doc-00000", "doc-00001"]
    assert set(table.column("dimensions").to_pylist()) == {768}
    assert set(table.column("model").to_pylist()) == {"gemini-embedding-001"}
    assert set(table.column("status").to_pylist()) == {"ok"}

    again = cli_process("run", str(_spec(tmp_path, vertex_emulator, bucket, output, dims=256)))
    assert again.returncode == 0, again.stderr
    assert sum(_submitted(again.stderr)) == TEXTS, "a changed output_dimensionality re-embeds everything"
    assert pq.read_table(tmp_path / "out/vectors.parquet").schema.field("embedding").type == \
        pa.list_(pa.float32(), 256)

    normalized = dict(output, normalize=True)
    same = cli_process("run", str(_spec(tmp_path, vertex_emulator, bucket, normalized, dims=256)))
    assert same.returncode == 0, same.stderr
    assert _submitted(same.stderr) == [], "normalising is done on the kept vectors: nothing is sent"
    first = pq.read_table(tmp_path / "out/vectors.parquet").column("embedding")[0].as_py()
    assert abs(sum(v * v for v in first) - 1.0) < 1e-5

    _write_texts(fs, bucket, TEXTS, TEXTS + 10, existing=fs.cat(f"{bucket}/corpus.jsonl"))
    grown = cli_process("run", str(_spec(tmp_path, vertex_emulator, bucket, normalized, dims=256)))
    assert grown.returncode == 0, grown.stderr
    assert _submitted(grown.stderr) == [10], "the 10 appended texts, and nothing else"
    assert pq.read_table(tmp_path / "out/vectors.parquet").num_rows == TEXTS + 10


@pytest.mark.bigquery
def test_vectors_load_into_bigquery_as_an_array_of_float64(tmp_path: Path, fs: Any, bucket: str,
                                                          vertex_emulator: str, bigquery_emulator: str) -> None:
    from batchflow.libs import bigquery as bq

    client = bq.client("test")
    client.create_dataset("test.emb", exists_ok=True)
    _write_texts(fs, bucket, 0, TEXTS)
    spec = _spec(tmp_path, vertex_emulator, bucket, {"type": "bigquery", "table": "test.emb.vectors",
                                                     "write": "truncate", "include_record": False})
    done = cli_process("run", str(spec))
    assert done.returncode == 0, done.stderr
    schema = {f.name: (f.field_type, f.mode) for f in client.get_table("test.emb.vectors").schema}
    assert schema["embedding"] == ("FLOAT", "REPEATED") or schema["embedding"] == ("FLOAT64", "REPEATED")
    assert schema["dimensions"][0] in ("INTEGER", "INT64") and schema["model"][0] == "STRING"
    rows = list(client.query("SELECT key, ARRAY_LENGTH(embedding) AS n, model FROM `test.emb.vectors` "
                             "ORDER BY key LIMIT 3").result())
    assert [(r["key"], r["n"], r["model"]) for r in rows] == [
        (f"doc-{i:05d}", 768, "gemini-embedding-001") for i in range(3)]


def test_the_same_spec_on_gemini_embedding_2_writes_the_task_into_the_text(
        tmp_path: Path, fs: Any, bucket: str, vertex_emulator: str) -> None:
    _write_texts(fs, bucket, 0, 20)
    output = {"type": "files", "path": "out/vectors.jsonl"}
    wrong = cli_process("run", str(_spec(tmp_path, vertex_emulator, bucket, output, model="gemini-embedding-2")))
    assert wrong.returncode == 2 and "global, us, eu" in wrong.stderr, wrong.stderr
    done = cli_process("run", str(_spec(tmp_path, vertex_emulator, bucket, output, model="gemini-embedding-2",
                                        location="global")))
    assert done.returncode == 0, done.stderr
    (staged,) = _staged_lines(fs, bucket)
    prefixed = "title: Chapter 3 | text: passage 3 about topic 3"
    assert staged[3]["request"] == {"content": {"parts": [{"text": prefixed}]},
                                    "embed_content_config": {"output_dimensionality": 768}}
    rows = [json.loads(x) for x in (tmp_path / "out/vectors.jsonl").read_text().splitlines()]
    assert all(len(r["embedding"]) == 768 and r["model"] == "gemini-embedding-2" for r in rows)
