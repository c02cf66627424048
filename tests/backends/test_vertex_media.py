"""Media on the vertex backend: local files staged to the staging bucket by content, gs:// objects passed as they
are, each answer naming the bytes the model read; against `batchflow emulator` and a real GCS emulator."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.helpers import cli_process, read_rows, write_spec
from support.media_files import jpeg, pdf, png, wav

from batchflow.emulator import start_in_thread

pytestmark = pytest.mark.gcs


@pytest.fixture
def vertex_emulator(tmp_path: Path, gcs_emulator: str) -> Iterator[str]:
    with start_in_thread(tmp_path / "emulator", job_seconds=0.2) as running:
        yield running.base_url


def _named(data: bytes, mime: str) -> str:
    return f"[{mime} {hashlib.sha256(data).hexdigest()[:12]} {len(data)} bytes]"


def _files(root: Path) -> dict[str, bytes]:
    """Twelve files, four of them copies of others."""
    files = {f"p{i}.png": png(i % 4) for i in range(8)} | {"a.jpg": jpeg(1), "b.pdf": pdf(2), "c.wav": wav(3),
                                                            "d.pdf": pdf(4, pages=3)}
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return files


def _spec(tmp_path: Path, base_url: str, bucket: str, **overrides: Any) -> Path:
    backend = {"type": "vertex", "project": "p", "location": "us-central1", "staging": f"gs://{bucket}/staging",
               "base_url": base_url}
    return write_spec(tmp_path, "vmedia", backend=backend, key=None,
                      prompt=["Describe {{ name }}.", {"media": "{{ path }}"}],
                      source={"type": "files", "path": "scans/*.*", "format": "media"}, **overrides)


def test_local_media_are_staged_once_by_content_and_each_answer_names_its_bytes(
        tmp_path: Path, fs: Any, bucket: str, vertex_emulator: str) -> None:
    files = _files(tmp_path / "scans")
    spec = _spec(tmp_path, vertex_emulator, bucket)
    done = cli_process("run", str(spec))
    assert done.returncode == 0, done.stderr
    rows = read_rows(tmp_path / "out/result.jsonl")
    assert sorted(r["key"] for r in rows) == sorted(files) and all(r["status"] == "ok" for r in rows)
    for r in rows:
        assert r["text"].endswith(_named(files[r["key"]], r["record"]["mime_type"])), (r["key"], r["text"])
    staged = sorted(fs.ls(f"{bucket}/staging/media"))
    distinct = {hashlib.sha256(data).hexdigest() + Path(name).suffix for name, data in files.items()}
    assert sorted(Path(s).name for s in staged) == sorted(distinct)  # 8 PNGs of 4 contents: 4 objects
    uploads = [json.loads(x) for x in done.stderr.splitlines() if '"event": "media uploaded"' in x]
    assert len(uploads) == len(distinct)
    assert all(fs.cat(f"{bucket}/staging/media/{hashlib.sha256(d).hexdigest()}{Path(n).suffix}") == d
               for n, d in files.items())

    again = cli_process("run", str(spec))
    assert again.returncode == 0 and '"event": "media uploaded"' not in again.stderr, again.stderr

    (tmp_path / "scans/p1.png").write_bytes(png(99))  # one file changed: one request, one upload
    changed = cli_process("run", "--json", str(spec))
    assert changed.returncode == 0, changed.stderr
    assert changed.stderr.count('"event": "media uploaded"') == 1
    rows = {r["key"]: r for r in read_rows(tmp_path / "out/result.jsonl")}
    assert rows["p1.png"]["text"].endswith(_named(png(99), "image/png"))


def test_a_gs_object_is_read_where_it_is(tmp_path: Path, fs: Any, bucket: str, vertex_emulator: str) -> None:
    data = pdf(7, pages=2)
    fs.pipe(f"{bucket}/docs/report.pdf", data)
    spec = write_spec(tmp_path, "vgs", backend={"type": "vertex", "project": "p", "location": "us-central1",
                                                "staging": f"gs://{bucket}/staging", "base_url": vertex_emulator},
                      source={"type": "inline", "records": [{"id": "r", "uri": f"gs://{bucket}/docs/report.pdf"}]},
                      prompt=["Summarise it.", {"media": "{{ uri }}"}])
    done = cli_process("run", str(spec))
    assert done.returncode == 0, done.stderr
    [row] = read_rows(tmp_path / "out/result.jsonl")
    assert row["status"] == "ok" and row["text"].endswith(_named(data, "application/pdf"))
    assert not fs.exists(f"{bucket}/staging/media")  # nothing copied: the job reads the object itself


def test_a_bucket_the_service_agent_cannot_read_names_the_bucket_the_agent_and_the_role(
        tmp_path: Path, fs: Any, bucket: str, gcs_emulator: str) -> None:
    """Vertex refuses the create (FAILED_PRECONDITION) when its service agent cannot read the staging bucket: the
    run ends with one line naming the bucket, the agent and the role to grant, creates no job, and once access is
    granted (a plan without the refusal) the next run finishes the work."""
    _files(tmp_path / "scans")
    plan = tmp_path / "plan.yaml"
    plan.write_text(f"access: {{unreadable_buckets: [{bucket}]}}\n")
    with start_in_thread(tmp_path / "emulator", job_seconds=0.2, faults=plan) as refusing:
        spec = _spec(tmp_path, refusing.base_url, bucket)
        done = cli_process("run", str(spec))
        created = refusing.engine.vertex.list("p", "us-central1", 100, None, lambda job, state: True)
    assert done.returncode == 1, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert f"cannot use gs://{bucket}" in last and "@gcp-sa-aiplatform.iam.gserviceaccount.com" in last, last
    assert "roles/storage.objectUser" in last and "storage.objects.get" in last, last
    assert not created.get("batchPredictionJobs"), created
    with start_in_thread(tmp_path / "emulator", job_seconds=0.2) as granted:
        spec = _spec(tmp_path, granted.base_url, bucket)
        again = cli_process("run", str(spec))
    assert again.returncode == 0, again.stderr
    assert len(read_rows(tmp_path / "out/result.jsonl")) == 12
