"""A unit's media where a Vertex batch job reads them: Cloud Storage URIs, nothing inline.

The request lines batchflow keeps name a local file by ``file:///path#sha256:HEX`` and a Cloud Storage object by
``gs://bucket/object#md5:…`` (``request/media.py``). Vertex reads ``fileData.fileUri`` from Cloud Storage, so:

- a local file goes to ``<staging>/media/<sha256><ext>`` (``backend.staging``'s root, shared by the specs that
  stage there: the name is the content, so an object that exists is never uploaded again, and is never deleted by a
  run, since another spec's job may read it);
- a ``gs://`` object passes as it is, its identity fragment dropped (its existence was checked while rendering).

The rewrite is a pure function of the kept line (``for_vertex``), so the staged line and the line ``results``
matches an echo against are the same, byte for byte (``vertex.py`` matches answers by the echoed request).
"""

from __future__ import annotations

import threading
from pathlib import Path, PurePosixPath
from typing import Any

from batchflow import logs
from batchflow.backends.base import MediaStaging
from batchflow.errors import BackendError, DataError
from batchflow.libs.storage import call_bound, put_file, remote, url_to_fs
from batchflow.request.media import file_parts, file_uri_path, untagged

log = logs.get_logger(__name__)

MARKS = (b"#sha256:", b"#md5:", b"#crc32c:")  # a kept line names media only where one of these stands


def names_media(raw: bytes) -> bool:
    """Whether a kept request line may name media to rewrite (a cheap look at its bytes)."""
    return any(mark in raw for mark in MARKS)


def media_root(staging: str) -> str:
    """Where a staging root keeps media objects: ``gs://bucket/prefix`` -> ``gs://bucket/prefix/media``."""
    return f"{staging.rstrip('/')}/media"


def object_uri(root: str, place: str, sha256: str) -> str:
    """The object that holds a local file's content: its sha256 and the file's extension, lower-cased."""
    return f"{root}/{sha256}{PurePosixPath(place).suffix.lower()}"


def for_vertex(request: Any, root: str) -> list[tuple[str, str]]:
    """Rewrite ``request``'s media parts in place into what Vertex reads; the (local path, object URI) of each
    local file it names, for ``VertexMedia.upload``."""
    local: list[tuple[str, str]] = []
    for part in file_parts(request):
        data: dict[str, Any] = part.get("fileData", part.get("file_data")) or {}
        name = "fileUri" if "fileUri" in data else "file_uri"
        uri = data.get(name)
        if not isinstance(uri, str):
            continue
        place, identity = untagged(uri)
        if identity is None:
            continue  # an https URL or a URI batchflow did not resolve: as written
        if place.startswith("file://") and identity.startswith("sha256:"):
            data[name] = object_uri(root, place, identity[7:])
            local.append((file_uri_path(place), data[name]))
        else:
            data[name] = place
    return local


class VertexMedia:
    """Uploads local media to the staging bucket by content, each distinct object once per process, none that is
    there already. Safe to call from the staging threads."""

    def __init__(self, root: str) -> None:
        self.root = root
        self._done: set[str] = set()
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self.uploads = 0  # objects this backend uploaded (a figure for logs and tests)

    def staging(self, contents: dict[str, tuple[str, int]]) -> MediaStaging:
        """Which local contents (sha256 -> (file, bytes)) have their object under the root already (one listing
        of it; a root that cannot be listed counts every content as to upload)."""
        try:
            fs, inside = url_to_fs(self.root)
            there = {PurePosixPath(str(p)).name for p in fs.ls(inside, detail=False)}
        except (FileNotFoundError, OSError):
            there = set()
        counts = [0] * 4
        for sha, (path, size) in contents.items():
            at = 2 if f"{sha}{PurePosixPath(path).suffix.lower()}" in there else 0
            counts[at] += 1
            counts[at + 1] += size
        return MediaStaging(*counts)

    def upload(self, files: list[tuple[str, str]]) -> None:
        for path, uri in files:
            with self._guard:
                if uri in self._done:
                    continue
                lock = self._locks.setdefault(uri, threading.Lock())
            with lock:
                if uri not in self._done:
                    self._put(path, uri)
                    with self._guard:
                        self._done.add(uri)

    def _put(self, path: str, uri: str) -> None:
        fs, target = url_to_fs(uri)
        bucket = uri.removeprefix("gs://").split("/", 1)[0]
        try:
            with remote("stage media", uri):
                if fs.exists(target, **call_bound(fs)):
                    return
            put_file(fs, path, target, uri, "stage media")
        except FileNotFoundError as exc:
            if not Path(path).exists():
                raise DataError(f"media {path!r}: the file is gone since it was read") from None
            raise BackendError(f"stage media {uri}: bucket {bucket!r} not found: {exc}") from exc
        except PermissionError as exc:
            raise BackendError(f"stage media {uri}: no permission to write to bucket {bucket!r} (the batch job's "
                               f"service agent must also be able to read it): {exc}") from exc
        except OSError as exc:
            raise BackendError(f"stage media {uri}: {exc}") from exc
        self.uploads += 1
        log.info("media uploaded", object=uri, bytes=Path(path).stat().st_size)
