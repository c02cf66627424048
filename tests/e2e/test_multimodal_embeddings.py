"""Multimodal embeddings with gemini-embedding-2, end to end through the CLI: images and text in one `content:`
list, staged on GCS for Vertex (the lines name gs:// objects under the staging root's media/) and inline or through
the Files API on the local backend; one vector per record, derived from the bytes; re-runs send only what changed."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.helpers import cli, read_rows, write_jsonl, write_spec
from support.media_files import jpeg, png, wav

from batchflow.emulator import start_in_thread
from batchflow.spec.limits import INLINE_MAX_BYTES

CONTENT = ["A product photo: {{ caption }}", {"media": "{{ path }}"}]


def _images(root: Path) -> dict[str, bytes]:
    """Five images, c.png a copy of a.png."""
    files = {"a.png": png(1), "b.png": png(2), "c.png": png(1), "d.jpg": jpeg(4), "e.png": png(5)}
    root.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (root / name).write_bytes(data)
    return files


def _manifest(tmp_path: Path, names: list[str]) -> None:
    """One record per image, every caption the same: the vectors differ by their image alone."""
    write_jsonl(tmp_path / "data/in.jsonl", [{"id": Path(n).stem, "path": f"images/{n}", "caption": "on a table"}
                                             for n in names])


def _submitted(logs: str) -> list[int]:
    events = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    return [e["requests"] for e in events if e["event"] == "job submitted"]


def _vectors(path: Path) -> dict[str, list[float]]:
    rows = read_rows(path)
    assert all(r["status"] == "ok" for r in rows), [r.get("error") for r in rows]
    return {r["key"]: r["embedding"] for r in rows}


def _assert_vectors_follow_the_bytes(vectors: dict[str, list[float]], files: dict[str, bytes]) -> None:
    by_key = {Path(n).stem: data for n, data in files.items()}
    for a, va in vectors.items():
        for b, vb in vectors.items():
            assert (va == vb) == (by_key[a] == by_key[b]), (a, b)


@pytest.fixture
def vertex_emulator(tmp_path: Path, gcs_emulator: str) -> Iterator[str]:
    with start_in_thread(tmp_path / "emulator", job_seconds=0.2) as running:
        yield running.base_url


def _staged_parts(fs: Any, bucket: str) -> list[list[dict[str, Any]]]:
    """The content parts of every line the run staged, read back from the GCS emulator."""
    lines: list[list[dict[str, Any]]] = []
    for name in sorted(fs.glob(f"{bucket}/staging/mm/*/input.jsonl")):
        lines += [json.loads(x)["request"]["content"]["parts"] for x in fs.cat(name).decode().splitlines()]
    return lines


def _file_data(part: dict[str, Any]) -> tuple[str, str]:
    data = part["fileData"]
    return data.get("fileUri", data.get("file_uri")), data.get("mimeType", data.get("mime_type"))


@pytest.mark.gcs
def test_images_on_vertex_are_staged_on_gcs_embedded_by_their_bytes_and_rerun_only_when_changed(
        tmp_path: Path, fs: Any, bucket: str, vertex_emulator: str) -> None:
    files = _images(tmp_path / "images")
    _manifest(tmp_path, list(files))
    spec = write_spec(tmp_path, "mm", model="gemini-embedding-2", task="embed", prompt=None, content=CONTENT,
                      embed_config={"output_dimensionality": 256, "task_type": "RETRIEVAL_DOCUMENT"},
                      backend={"type": "vertex", "project": "p", "location": "global",
                               "staging": f"gs://{bucket}/staging", "base_url": vertex_emulator},
                      output={"type": "files", "path": "out/vectors.jsonl"})
    done = cli("run", str(spec))
    assert done.exit_code == 0, done.stderr
    assert _submitted(done.stderr) == [len(files)]
    staged = _staged_parts(fs, bucket)
    assert len(staged) == len(files) - 1, "a.png and c.png make one request: staged once, its answer to both"
    for parts in staged:
        assert parts[0] == {"text": "title: none | text: A product photo: on a table"}
        uri, mime = _file_data(parts[1])
        assert uri.startswith(f"gs://{bucket}/staging/media/") and mime in ("image/png", "image/jpeg")
        name = uri.rsplit("/", 1)[1]
        assert fs.cat(uri) and hashlib.sha256(fs.cat(uri)).hexdigest() == name.split(".")[0]
    assert {_file_data(p[1])[0].rsplit("/", 1)[1] for p in staged} == {
        hashlib.sha256(d).hexdigest() + Path(n).suffix for n, d in files.items()}  # a.png and c.png: one object
    vectors = _vectors(tmp_path / "out/vectors.jsonl")
    assert len(vectors) == len(files) and all(len(v) == 256 for v in vectors.values())
    _assert_vectors_follow_the_bytes(vectors, files)

    again = cli("run", str(spec))
    assert again.exit_code == 0, again.stderr
    assert _submitted(again.stderr) == [], "a second run sends nothing"

    (tmp_path / "images/e.png").write_bytes(png(6))
    changed = cli("run", str(spec))
    assert changed.exit_code == 0, changed.stderr
    assert _submitted(changed.stderr) == [1], "one image changed: one request"
    after = _vectors(tmp_path / "out/vectors.jsonl")
    assert after["e"] != vectors["e"] and {k: v for k, v in after.items() if k != "e"} == \
        {k: v for k, v in vectors.items() if k != "e"}


def test_images_and_a_long_recording_on_the_local_backend_go_inline_and_through_the_files_api(
        tmp_path: Path) -> None:
    files = {"a.png": png(1), "b.png": png(1), "c.png": png(3),
             "long.wav": wav(7, seconds=INLINE_MAX_BYTES / 8000 + 1)}  # over the inline threshold: uploaded
    (tmp_path / "images").mkdir()
    for name, data in files.items():
        (tmp_path / "images" / name).write_bytes(data)
    _manifest(tmp_path, list(files))
    spec = write_spec(tmp_path, "mm-local", model="gemini-embedding-2", task="embed", prompt=None,
                      content=CONTENT, embed_config={"output_dimensionality": 128},
                      output={"type": "files", "path": "out/vectors.jsonl"})
    done = cli("run", str(spec))
    assert done.exit_code == 0, done.stderr
    uploads = [json.loads(x) for x in done.stderr.splitlines() if '"event": "media uploaded"' in x]
    assert [u["sha256"] for u in uploads] == [hashlib.sha256(files["long.wav"]).hexdigest()]
    vectors = _vectors(tmp_path / "out/vectors.jsonl")
    assert sorted(vectors) == ["a", "b", "c", "long"] and all(len(v) == 128 for v in vectors.values())
    _assert_vectors_follow_the_bytes(vectors, files)

    (tmp_path / "images/c.png").write_bytes(png(4))
    changed = cli("run", str(spec))
    assert changed.exit_code == 0, changed.stderr
    assert _submitted(changed.stderr) == [1]
    assert _vectors(tmp_path / "out/vectors.jsonl")["c"] != vectors["c"]
