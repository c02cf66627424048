"""Every example in specs/ validates, and runs: the local ones as they are, the vertex one against stand-ins."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest
from support.helpers import cli, cli_process

from batchflow.emulator import start_in_thread

SPECS = sorted((Path(__file__).resolve().parents[2] / "specs").glob("*.yaml"))
ENV = {"GCP_PROJECT": "example-project", "BATCHFLOW_BUCKET": "example-bucket"}


def _copy(tmp_path: Path) -> Path:
    shutil.copytree(SPECS[0].parent, tmp_path / "specs", ignore=shutil.ignore_patterns("out", ".batchflow"))
    return tmp_path / "specs"


def test_there_are_examples() -> None:
    assert {p.name for p in SPECS} >= {"quickstart.yaml", "embed.yaml", "requests.yaml", "vertex.yaml"}


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.name)
def test_every_example_validates(spec: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    result = cli("validate", str(spec))
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("ok: ")


def _local(spec: Path) -> bool:
    text = spec.read_text()
    return "type: vertex" not in text and "type: bigquery" not in text


@pytest.mark.parametrize("spec", [s for s in SPECS if _local(s)], ids=lambda p: p.name)
def test_every_local_example_runs_to_one_row_per_record(spec: Path, tmp_path: Path) -> None:
    specs = _copy(tmp_path)
    done = cli_process("run", str(specs / spec.name))
    assert done.returncode == 0, done.stderr
    summary = done.stdout.strip().splitlines()[-1]
    records, _, rest = summary.partition(" records: ")
    assert rest.startswith(f"{records} ok, 0 failed")


def _vertex_example(tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, str]:
    """The example ``name`` run against a Vertex emulator and the GCS emulator; the file system and bucket."""
    import gcsfs

    bucket = "ex-" + uuid.uuid4().hex[:8]
    fs = gcsfs.GCSFileSystem(token="anon", project="p")
    fs.mkdir(bucket)
    fs.pipe(f"{bucket}/reviews/part-1.jsonl", (SPECS[0].parent / "data/reviews.jsonl").read_bytes())
    specs = _copy(tmp_path)
    with start_in_thread(tmp_path / "emulator", job_seconds=0.2) as running:
        monkeypatch.setenv("GOOGLE_VERTEX_BASE_URL", running.base_url)
        monkeypatch.setenv("GCP_PROJECT", "example-project")
        monkeypatch.setenv("BATCHFLOW_BUCKET", bucket)
        done = cli_process("run", str(specs / name))
    assert done.returncode == 0, done.stderr
    return fs, bucket


@pytest.mark.gcs
def test_the_vertex_embeddings_example_runs_against_the_stand_ins(tmp_path: Path, gcs_emulator: str,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    fs, bucket = _vertex_example(tmp_path, "vertex-embeddings.yaml", monkeypatch)
    with fs.open(f"{bucket}/out/review-vectors.parquet", "rb") as fh:
        table = pq.read_table(fh)
    assert table.num_rows == len((SPECS[0].parent / "data/reviews.jsonl").read_text().splitlines())
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), 768)


@pytest.mark.gcs
def test_the_vertex_example_runs_against_the_stand_ins(tmp_path: Path, gcs_emulator: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import gcsfs

    bucket = "ex-" + uuid.uuid4().hex[:8]
    fs = gcsfs.GCSFileSystem(token="anon", project="p")
    fs.mkdir(bucket)
    reviews = (SPECS[0].parent / "data/reviews.jsonl").read_bytes()
    fs.pipe(f"{bucket}/reviews/part-1.jsonl", reviews)
    specs = _copy(tmp_path)
    with start_in_thread(tmp_path / "emulator", job_seconds=0.2) as running:
        monkeypatch.setenv("GOOGLE_VERTEX_BASE_URL", running.base_url)
        monkeypatch.setenv("GCP_PROJECT", "example-project")
        monkeypatch.setenv("BATCHFLOW_BUCKET", bucket)
        done = cli_process("run", str(specs / "vertex.yaml"))
    assert done.returncode == 0, done.stderr
    rows = [json.loads(x) for x in fs.cat(f"{bucket}/out/vertex-reviews.jsonl").decode().splitlines()]
    assert len(rows) == len(reviews.splitlines())
    assert all(r["parsed"]["sentiment"] in {"positive", "negative", "neutral"} for r in rows)
