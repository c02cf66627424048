"""Media parts: a reference a record gives (a local path, ``file://``, ``gs://``, ``https://``) resolved to where
its bytes are, what they are (MIME type) and who they are (a content identity), checked before anything is spent.

The identity, not the place, is what a request is known by: the sha256 of a local file's bytes, a GCS object's
md5 (or crc32c) as the service keeps it, the URL itself for https (the service fetches it; batchflow never reads
it). A request line names each media part with its identity in the URI's fragment (``tagged``), so the digest of
the line, which keys kept answers, changes when the content does and not when the file is staged anew.

Small and generic on purpose: a reference in, a ``Media`` out. Rendering, staging and the embeddings path all use it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from batchflow.errors import DataError
from batchflow.libs.mime import HEAD, by_extension, canonical, sniff
from batchflow.libs.storage import call_bound, remote, url_to_fs
from batchflow.spec.limits import media_over_caps
from batchflow.spec.models import MediaCaps
from batchflow.spec.spec import Spec

_CHUNK = 1 << 20

@dataclass(frozen=True)
class Media:
    """One media part, resolved: where its bytes are, their type, their size and their identity."""

    uri: str  # file:///abs/path, gs://bucket/object or https://...
    mime_type: str
    size: int | None  # bytes; None for an https URL (never fetched)
    identity: str  # "sha256:HEX", "md5:BASE64", "crc32c:BASE64" or "url"
    mtime_ns: int | None = None  # a local file's, stat-ed before it was read (FileStats)

    @property
    def path(self) -> Path | None:
        """The local file, for a ``file://`` URI."""
        return Path(unquote(urlsplit(self.uri).path)) if self.uri.startswith("file://") else None

    @property
    def sha256(self) -> str | None:
        return self.identity[7:] if self.identity.startswith("sha256:") else None

    def tagged(self) -> str:
        """The URI a request line carries: the place, and the content's identity in the fragment."""
        return self.uri if self.identity == "url" else f"{self.uri}#{self.identity}"


def resolve(reference: str, base: Path, mime_type: str | None = None, *, mime_types: frozenset[str],
            max_bytes: int) -> Media:
    """The media a reference names, checked; a ``DataError`` saying what is wrong with it (the caller says where).

    ``base`` is the directory a relative path is read from (the spec's); ``mime_type``, when given, is taken as
    the type (the record knows better than a guess); ``mime_types`` are the types the model takes."""
    ref = reference.strip()
    if not ref:
        raise DataError("media: the reference is empty")
    scheme = urlsplit(ref).scheme.lower()
    if scheme in ("http", "https"):
        media = _url(ref, mime_type)
    elif scheme in ("gs", "gcs"):
        media = _gcs(ref, mime_type)
    elif scheme in ("", "file") or len(scheme) == 1:  # a Windows drive letter reads as a scheme
        media = _local(_local_path(ref, base), mime_type)
    else:
        raise DataError(f"media {ref!r}: the scheme {scheme}:// is not one batchflow reads (a local path, "
                        "file://, gs:// or https://)")
    return _checked(media, ref, mime_types, max_bytes)


def untagged(uri: str) -> tuple[str, str | None]:
    """A request line's media URI -> (the place, the identity in its fragment, if it has one)."""
    place, sep, fragment = uri.partition("#")
    known = sep and fragment.split(":", 1)[0] in ("sha256", "md5", "crc32c")
    return (place, fragment) if known else (uri, None)


def sha256_of(path: Path) -> str:
    """The hex sha256 of a file's bytes, read in chunks (cached by path, size and mtime: records share files)."""
    stat = path.stat()
    return _sha256(str(path), stat.st_size, stat.st_mtime_ns)


_HASHED: dict[tuple[str, int, int], str] = {}


def _sha256(path: str, size: int, mtime_ns: int) -> str:
    key = (path, size, mtime_ns)
    found = _HASHED.get(key)
    if found is None:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
        found = _HASHED[key] = digest.hexdigest()
        if len(_HASHED) > 100_000:  # bounded: a million distinct files need not stay in memory
            _HASHED.clear()
    return found


def _local_path(ref: str, base: Path) -> Path:
    if ref.lower().startswith("file://"):
        return Path(unquote(urlsplit(ref).path))
    path = Path(os.path.expanduser(ref))
    return path if path.is_absolute() else base / path


def _local(path: Path, declared: str | None) -> Media:
    try:
        stat = path.stat()
        size = stat.st_size
        with open(path, "rb") as fh:
            head = fh.read(HEAD)
    except FileNotFoundError:
        raise DataError(f"media {str(path)!r}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"media {str(path)!r}: is a directory, not a file") from None
    except OSError as exc:
        raise DataError(f"media {str(path)!r}: cannot be read: {exc.strerror or exc}") from None
    mime = _declared(declared) or sniff(head) or by_extension(path.suffix)
    return Media(path.resolve().as_uri(), mime or "", size, f"sha256:{sha256_of(path)}", stat.st_mtime_ns)


def _gcs(ref: str, declared: str | None) -> Media:
    uri = "gs://" + ref.split("://", 1)[1]
    try:
        fs, inside = url_to_fs(uri)
        with remote("info", uri):
            info: dict[str, Any] = fs.info(inside, **call_bound(fs))
    except FileNotFoundError:
        raise DataError(f"media {uri!r}: no such object") from None
    except OSError as exc:
        raise DataError(f"media {uri!r}: cannot be read: {exc}") from None
    if info.get("type") == "directory":
        raise DataError(f"media {uri!r}: is a folder, not an object")
    identity = (f"md5:{info['md5Hash']}" if info.get("md5Hash") else
                f"crc32c:{info['crc32c']}" if info.get("crc32c") else f"generation:{info.get('generation')}")
    stored = info.get("contentType") if info.get("contentType") != "application/octet-stream" else None
    mime = _declared(declared) or by_extension(Path(inside).suffix) or canonical(stored)
    return Media(uri, mime or "", int(info.get("size") or 0), identity)


def _url(ref: str, declared: str | None) -> Media:
    return Media(ref, _declared(declared) or by_extension(Path(urlsplit(ref).path).suffix) or "", None, "url")


def _checked(media: Media, ref: str, mime_types: frozenset[str], max_bytes: int) -> Media:
    if not media.mime_type:
        raise DataError(f"media {ref!r}: cannot tell its type from its name or its first bytes; "
                        "give mime_type beside media")
    if media.mime_type not in mime_types:
        raise DataError(f"media {ref!r}: type {media.mime_type} is not one the model takes"
                        + (f" (it takes {', '.join(sorted(mime_types))})" if mime_types else " (it takes none)"))
    if media.size is not None and media.size > max_bytes:
        raise DataError(f"media {ref!r}: {media.size:,} bytes is over the limit of {max_bytes:,} bytes a file")
    return media


def _declared(mime_type: str | None) -> str | None:
    return canonical(mime_type.strip().lower()) if mime_type and mime_type.strip() else None


def check_caps(found: list[Media], caps: MediaCaps, model: str) -> None:
    """A ``DataError`` when one request's media are more than the model takes in a request (``limits``'s
    ``media_over_caps``): too many images, PDFs, videos or audio files, a PDF of too many pages, a video or audio
    file too long. Extents are read from a local file (up to 64 MB); a gs:// object's or a URL's, and a larger
    file's, are left to the service, which has the last word."""
    parts = [(f"media {str(m.path or m.uri)!r}", m.mime_type, _extent_bytes(m)) for m in found]
    problem = media_over_caps(parts, caps, model)
    if problem is not None:
        raise DataError(problem if problem.startswith("media ") else f"media: {problem}")


_EXTENT_READ_MAX = 64 << 20


def _extent_bytes(item: Media) -> bytes | None:
    """A local file's bytes, for its pages or seconds (images need none: their count is the cap)."""
    path = item.path
    if item.mime_type.startswith("image/") or path is None or item.size is None or item.size > _EXTENT_READ_MAX:
        return None
    return path.read_bytes()


class FileStats:
    """The local files a generation's requests read, written one path a line as they are met, and a digest of
    their sizes and mtimes then: the next run stats the same files again (``stats_digest``) and, when nothing
    differs and the spec and source are the same, has nothing to render. A reference that is not a local file
    batchflow can stat (a gs:// object, whose content may change unseen) or a media part that failed to resolve
    (the file may appear) leaves no digest: such a spec renders again on each run."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._out = open(path, "wb")  # noqa: SIM115 (closed by close(), the caller's finally)
        self._digest = hashlib.blake2b(digest_size=16)
        self._seen: set[str] = set()
        self.whole = True

    def add(self, media: Media) -> None:
        if media.identity == "url":
            return  # known by its URL alone: nothing of it to look at again
        local = media.path
        if local is None or media.mtime_ns is None or "\n" in str(local):
            self.whole = False
            return
        name = str(local)
        if name in self._seen:
            return
        if len(self._seen) >= 100_000:  # bounded: a repeat after this is written again (stats_digest does alike)
            self._seen.clear()
        self._seen.add(name)
        self._out.write(os.fsencode(name) + b"\n")
        self._digest.update(b"%s\0%d\0%d\n" % (os.fsencode(name), media.size or 0, media.mtime_ns))

    def unsure(self) -> None:
        self.whole = False

    def close(self) -> str | None:
        """The digest of the files' stats, or None when the files cannot all be looked at again."""
        if not self._out.closed:
            self._out.close()
        return self._digest.hexdigest() if self.whole else None


def stats_digest(path: Path) -> str | None:
    """The digest ``FileStats`` would give for the files listed at ``path`` as they are now; None when the list
    or one of its files is gone."""
    digest = hashlib.blake2b(digest_size=16)
    try:
        with open(path, "rb") as fh:
            for line in fh:
                name = line.rstrip(b"\n")
                stat = os.stat(name)
                digest.update(b"%s\0%d\0%d\n" % (name, stat.st_size, stat.st_mtime_ns))
    except OSError:
        return None
    return digest.hexdigest()


def may_have_media(spec: Spec) -> bool:
    """Whether the spec's requests may hold file_data parts to resolve (a text-only spec never walks them)."""
    listed = (*(spec.prompt_parts or ()), *(spec.system_parts or ()), *(spec.content_parts or ()))
    if any(isinstance(p, Mapping) for p in listed):
        return True
    if isinstance(spec.request, str):
        return True  # "{{ request }}": the record's own request, whatever it holds
    return spec.request is not None and any(w in repr(spec.request) for w in ("file_data", "fileData"))


def file_parts(request: Any) -> Iterator[dict[str, Any]]:
    """Every part of a request line (contents and system instruction, or an embed request's content) that holds a
    ``file_data`` member, either spelling: what a stager rewrites in place."""
    if not isinstance(request, dict):
        return
    contents = list(request.get("contents") or [])
    if isinstance(request.get("content"), dict):
        contents.append(request["content"])
    for name in ("systemInstruction", "system_instruction"):
        if isinstance(request.get(name), dict):
            contents.append(request[name])
    for content in contents:
        for part in (content.get("parts") or []) if isinstance(content, dict) else []:
            if isinstance(part, dict) and isinstance(part.get("fileData", part.get("file_data")), dict):
                yield part


def file_uri_path(uri: str) -> str:
    """``file:///a%20b/c.png`` -> ``/a b/c.png``."""
    return unquote(urlsplit(uri).path)
