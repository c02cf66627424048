"""Media references resolved: place, type, size and identity; every bad one a DataError saying what is wrong."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from support.media_files import jpeg, pdf, png, wav

from batchflow.errors import DataError
from batchflow.libs.mime import sniff
from batchflow.request.media import Media, resolve, untagged
from batchflow.spec.limits import MEDIA_MIME_TYPES

LIMIT = 10_000_000


def _resolve(ref: str, base: Path, mime_type: str | None = None, max_bytes: int = LIMIT) -> Media:
    return resolve(ref, base, mime_type, mime_types=MEDIA_MIME_TYPES, max_bytes=max_bytes)


@pytest.mark.parametrize(("data", "mime"), [(png(1), "image/png"), (jpeg(1), "image/jpeg"),
                                            (pdf(1), "application/pdf"), (wav(1), "audio/wav")])
def test_magic_bytes_name_the_type(data: bytes, mime: str) -> None:
    assert sniff(data[:64]) == mime


def test_a_relative_path_is_read_from_the_spec_directory(tmp_path: Path) -> None:
    (tmp_path / "scans").mkdir()
    data = png(3)
    (tmp_path / "scans" / "a.png").write_bytes(data)
    media = _resolve("scans/a.png", tmp_path)
    assert media.path == tmp_path / "scans" / "a.png"
    assert media.uri.startswith("file://")
    assert (media.mime_type, media.size) == ("image/png", len(data))
    assert media.sha256 == hashlib.sha256(data).hexdigest()


def test_absolute_and_file_uri_name_the_same_file(tmp_path: Path) -> None:
    (tmp_path / "a.pdf").write_bytes(pdf(1))
    by_path = _resolve(str(tmp_path / "a.pdf"), Path("/elsewhere"))
    by_uri = _resolve((tmp_path / "a.pdf").as_uri(), Path("/elsewhere"))
    assert by_path == by_uri


def test_the_bytes_win_over_a_wrong_extension(tmp_path: Path) -> None:
    (tmp_path / "scan.png").write_bytes(pdf(1))
    assert _resolve("scan.png", tmp_path).mime_type == "application/pdf"


def test_a_declared_type_wins_and_is_spelled_as_google_does(tmp_path: Path) -> None:
    (tmp_path / "clip.bin").write_bytes(wav(1))
    assert _resolve("clip.bin", tmp_path, "audio/x-wav").mime_type == "audio/wav"


def test_the_identity_is_the_content_not_the_place(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(png(1))
    (tmp_path / "b.png").write_bytes(png(1))
    first, second = _resolve("a.png", tmp_path), _resolve("b.png", tmp_path)
    assert first.identity == second.identity and first.uri != second.uri
    (tmp_path / "a.png").write_bytes(png(2))
    assert _resolve("a.png", tmp_path).identity != first.identity


def test_a_tagged_uri_carries_the_identity_and_comes_apart(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(png(1))
    media = _resolve("a.png", tmp_path)
    assert untagged(media.tagged()) == (media.uri, media.identity)
    assert untagged("https://example.com/a.png#page=2") == ("https://example.com/a.png#page=2", None)


def test_https_passes_with_its_url_as_identity() -> None:
    media = _resolve("https://example.com/docs/a.pdf", Path("."))
    assert (media.uri, media.mime_type, media.size, media.identity) == (
        "https://example.com/docs/a.pdf", "application/pdf", None, "url")
    assert media.tagged() == media.uri


@pytest.mark.parametrize(("name", "data", "mime_type", "max_bytes", "says"), [
    ("missing.png", None, None, LIMIT, "no such file"),
    ("notes.xyz", b"just some words", None, LIMIT, "cannot tell its type"),
    ("page.html", b"<html></html>", None, LIMIT, "type text/html is not one the model takes"),
    ("big.png", png(1), None, 10, "over the limit of 10 bytes"),
    ("", None, None, LIMIT, "the reference is empty"),
])
def test_a_bad_reference_says_why(tmp_path: Path, name: str, data: bytes | None, mime_type: str | None,
                                  max_bytes: int, says: str) -> None:
    if data is not None:
        (tmp_path / name).write_bytes(data)
    with pytest.raises(DataError, match=says):
        _resolve(name, tmp_path, mime_type, max_bytes)


def test_an_unknown_scheme_is_refused() -> None:
    with pytest.raises(DataError, match="s3:// is not one batchflow reads"):
        _resolve("s3://bucket/a.png", Path("."))


@pytest.mark.gcs
def test_a_gcs_object_is_known_by_its_md5(fs: Any, bucket: str) -> None:
    fs.pipe(f"{bucket}/scans/a.pdf", pdf(1))
    media = _resolve(f"gs://{bucket}/scans/a.pdf", Path("."))
    info = fs.info(f"{bucket}/scans/a.pdf")
    assert (media.uri, media.mime_type, media.size) == (f"gs://{bucket}/scans/a.pdf", "application/pdf", len(pdf(1)))
    assert media.identity == f"md5:{info['md5Hash']}"
    with pytest.raises(DataError, match="no such object"):
        _resolve(f"gs://{bucket}/scans/missing.pdf", Path("."))


def test_file_stats_change_with_a_files_mtime_and_are_none_for_a_gs_object(tmp_path: Path) -> None:
    import os

    from batchflow.request.media import FileStats, stats_digest

    (tmp_path / "a.png").write_bytes(png(1))
    stats = FileStats(tmp_path / "list")
    for _ in range(3):  # a file many records name is listed once
        stats.add(_resolve("a.png", tmp_path))
    digest = stats.close()
    assert digest is not None and stats_digest(tmp_path / "list") == digest
    assert (tmp_path / "list").read_bytes().count(b"\n") == 1
    os.utime(tmp_path / "a.png", ns=(1, 1))
    assert stats_digest(tmp_path / "list") != digest
    (tmp_path / "a.png").unlink()
    assert stats_digest(tmp_path / "list") is None

    remote = FileStats(tmp_path / "remote")
    remote.add(Media("gs://b/o.png", "image/png", 1, "md5:x"))
    assert remote.close() is None, "a gs:// object may change unseen: no digest"
