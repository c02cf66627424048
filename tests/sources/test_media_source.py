"""``format: media``: a folder (or a gs:// glob) of files is one record per file, keyed by its path from the root."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
from support.media_files import jpeg, pdf, png, wav

from batchflow.prepare.prepare import rendered
from batchflow.sources.files import FilesSource
from batchflow.spec.spec import SourceSpec, load_spec


def _folder(root: Path) -> dict[str, bytes]:
    files = {"a/one.png": png(1), "a/two.jpg": jpeg(2), "b/doc.pdf": pdf(3), "b/deep/clip.wav": wav(4)}
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return files


def test_each_file_is_a_record_with_its_path_name_type_and_size(tmp_path: Path) -> None:
    files = _folder(tmp_path / "scans")
    source = FilesSource(SourceSpec(type="files", path=f"{tmp_path}/scans/**/*.*", format="media"))
    records = {r["relative_path"]: r for r, *_ in source.items()}
    assert set(records) == set(files)
    clip = records["b/deep/clip.wav"]
    assert clip == {"path": str(tmp_path / "scans/b/deep/clip.wav"), "name": "clip.wav", "mime_type": "audio/wav",
                    "size_bytes": len(files["b/deep/clip.wav"]), "relative_path": "b/deep/clip.wav"}
    assert records["a/two.jpg"]["mime_type"] == "image/jpeg"


def test_a_folder_spec_is_keyed_by_relative_path_and_renders_media_parts(tmp_path: Path) -> None:
    _folder(tmp_path / "scans")
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(textwrap.dedent("""\
        version: 1
        name: folder
        model: gemini-2.5-flash
        source: {type: files, path: "scans/**/*.*", format: media}
        prompt: ["Describe {{ name }} ({{ mime_type }}, {{ size_bytes }} bytes).", {media: "{{ path }}"}]
        output: {path: out.jsonl}
        """))
    keys = {r.key: r.request for r in rendered(load_spec(spec_path, environ={}))}
    assert set(keys) == {"a/one.png", "a/two.jpg", "b/doc.pdf", "b/deep/clip.wav"}
    assert "#sha256:" in str(keys["b/doc.pdf"]["contents"][0]["parts"][1])


@pytest.mark.gcs
def test_a_gcs_glob_gives_gs_paths(fs: Any, bucket: str) -> None:
    fs.pipe(f"{bucket}/in/x/a.pdf", pdf(1))
    fs.pipe(f"{bucket}/in/b.png", png(1))
    source = FilesSource(SourceSpec(type="files", path=f"gs://{bucket}/in/**/*.*", format="media"))
    records = {r["relative_path"]: r for r, *_ in source.items()}
    assert records["x/a.pdf"]["path"] == f"gs://{bucket}/in/x/a.pdf"
    assert (records["x/a.pdf"]["mime_type"], records["b.png"]["size_bytes"]) == ("application/pdf", len(png(1)))
