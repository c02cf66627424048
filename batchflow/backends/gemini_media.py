"""A unit's local media files where the Gemini API reads them: each distinct content (sha256) uploaded once
through the Files API, or put inline when it is small; the unit's request lines rewritten to name them.

The request lines batchflow writes name a local file by ``file:///path#sha256:HEX`` (``request/media.py``): the
identity stays in the lines kept, so a file staged again is not a new request. Only what goes to the service is
rewritten, into a copy of the unit's file beside it.
"""

from __future__ import annotations

import base64
import hashlib
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import orjson

from batchflow import logs
from batchflow.backends.base import MediaStaging
from batchflow.backends.sdk import api_errors
from batchflow.errors import BackendError, DataError, FilesQuotaFull, QuotaExceeded, TransientError
from batchflow.libs.storage import get_file, url_to_fs
from batchflow.request.media import file_parts, file_uri_path, untagged
from batchflow.spec.limits import INLINE_MAX_BYTES, MEDIA_FILE_HOURS, MEDIA_PROJECT_MAX_BYTES, MEDIA_REUSE_MIN_HOURS

_MARK = b"#sha256:"
_MARKS = (_MARK, b"#md5:", b"#crc32c:")  # a kept line names a local file (sha256) or a gs:// object (md5, crc32c)
_DISPLAY_PREFIX = "batchflow-media-"
_SHA_IN_NAME = 40  # hex digits of the sha256 in an upload's display name (display names are capped at 512)
_FILES_PAGE = 100
_HOUR = 3600.0
# How the Gemini API refuses a line whose Files API file is gone (deleted 48 h after its upload, or never there):
# 403 PERMISSION_DENIED, "You do not have permission to access the File ID or it may not exist."
_FILE_GONE = re.compile(r"access the File (?:files/)?([A-Za-z0-9_-]+) or it may not exist")
_HEX = re.compile(r"[0-9a-f]+")

log = logs.get_logger(__name__)
_NL = orjson.OPT_APPEND_NEWLINE


@dataclass(frozen=True)
class _Upload:
    """A Files API file holding one content: its name (files/ID), its URI (what a part names), its expiry."""

    name: str
    uri: str
    expires: float


class GeminiMedia:
    """Uploads by content, found again at the service (their display names carry the sha256) so that a second run
    or a retry reuses them, but only while they will outlive the job: the Files API deletes a file 48 h after its
    upload, so one with less than a day to live is uploaded again. Safe to call from the staging threads."""

    def __init__(self, client: Any, inline_max: int = INLINE_MAX_BYTES,
                 clock: Callable[[], float] = time.time, owner: str = "",
                 max_bytes: int = MEDIA_PROJECT_MAX_BYTES, gcs: GcsMedia | None = None) -> None:
        self._client = client
        self._gcs = gcs or GcsMedia(client)  # gs:// objects: registered, or copied through
        # The Files API storage this run's media may hold at once: a unit whose uploads would pass it is not staged
        # (FilesQuotaFull) until collected units' media are deleted (``collected``), so the run goes in waves.
        self._max_bytes = max_bytes
        self._held: dict[str, int] = {}  # sha256 -> bytes, of every upload in ``_uploaded``
        self._reserved = 0  # bytes the units being staged now are about to upload
        self._readers: dict[str, set[str]] = {}  # sha256 -> the staged units (their request files) that name it
        # the spec's name in every display name: a spec deletes only its own uploads, never those a live job of
        # another spec reads (which costs a second upload of content two specs share)
        self._prefix = f"{_DISPLAY_PREFIX}{owner}-" if owner else _DISPLAY_PREFIX
        self._inline_max = inline_max
        self._clock = clock
        self._uploaded: dict[str, _Upload] = {}  # sha256 -> this backend's upload of it
        self._listed = False  # whether the service's earlier uploads were looked up (one paged list, once)
        self._earlier: dict[str, _Upload] = {}  # display name -> an earlier run's upload, the longest-lived
        self._list_lock = threading.Lock()
        self._extra: list[_Upload] = []  # every earlier upload found, to delete at the end
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self.uploads = 0  # files this backend uploaded (a figure for logs and tests)

    def rewritten(self, path: Path, unit: str = "") -> Path | None:
        """A copy of the unit's lines with its local media staged, or None when they name no local file. Raises
        FilesQuotaFull, before uploading anything, when its uploads would not fit ``max_bytes`` now. ``unit``
        names the unit (its job's display name) to ``collected``."""
        if not _names_local_media(path):
            return None
        reserved = self._reserve(unit, self._uploads_of(path))
        out = path.with_name(path.name + ".staged")
        try:
            with open(path, "rb") as src, open(out, "wb") as dst:
                for line in src:
                    dst.write(self._line(line) if any(m in line for m in _MARKS) else line)
        except BaseException:
            # a unit half staged holds no room: what it uploaded that no staged unit reads is deleted (else units
            # each holding part of their media could leave nothing that fits and nothing in flight to wait for)
            out.unlink(missing_ok=True)
            self.collected(unit)
            raise
        finally:
            with self._guard:
                self._reserved -= reserved
        return out

    def _uploads_of(self, path: Path) -> dict[str, int]:
        """The contents a unit's lines name that go through the Files API (over the inline threshold): their
        sha256 and size. A file that cannot be read is left to the rewriting, which says so."""
        found: dict[str, int] = {}
        with open(path, "rb") as src:
            for line in src:
                if _MARK not in line:
                    continue
                for local, sha in _local_media(orjson.loads(line)):
                    try:
                        size = local.stat().st_size
                    except OSError:
                        continue
                    if size > self._inline_max:
                        found[sha] = size
        return found

    def _reserve(self, unit: str, contents: dict[str, int]) -> int:
        """Room for what a unit must upload (its contents not already at the service, alive): reserved and
        returned; the unit becomes a reader of each of its contents. FilesQuotaFull when it does not fit beside
        what is held and no more than one unit alone."""
        if contents:
            self._list_earlier()
        with self._guard:
            need = sum(size for sha, size in contents.items() if not self._alive(sha))
            if need > self._max_bytes:
                raise DataError(f"the media of one job ({need:,} bytes to upload) are more than the Files API "
                                f"may hold (jobs.max_media_bytes: {self._max_bytes:,}); lower jobs.max_requests")
            held = sum(self._held.values()) + self._reserved
            if need and held + need > self._max_bytes:
                raise FilesQuotaFull(f"{need:,} bytes of media to upload and {held:,} held, over "
                                     f"jobs.max_media_bytes ({self._max_bytes:,}): waiting for collected jobs' "
                                     "media to be deleted")
            self._reserved += need
            for sha in contents:
                self._readers.setdefault(sha, set()).add(unit)
        return need

    def _alive(self, sha: str) -> bool:
        """Whether a content is at the service and will outlive a job created now (called under the guard)."""
        found = self._uploaded.get(sha) or self._earlier.get(self._prefix + sha[:_SHA_IN_NAME])
        return found is not None and self._lasts(found.expires)

    def staging(self, contents: dict[str, tuple[str, int]]) -> MediaStaging:
        """Where local contents (sha256 -> (file, bytes)) stand: inline, alive at the service, or to upload."""
        self._list_earlier()
        counts = [0] * 6
        with self._guard:
            for sha, (_, size) in contents.items():
                at = 4 if size <= self._inline_max else 2 if self._alive(sha) else 0
                counts[at] += 1
                counts[at + 1] += size
        return MediaStaging(*counts)

    def collected(self, unit: str) -> int:
        """A unit's job is collected: delete the uploads that no other staged unit reads (they make room for the
        next wave; a retry that needs one uploads it again). How many were deleted."""
        done: list[_Upload] = []
        with self._guard:
            for sha in [sha for sha, readers in self._readers.items() if unit in readers]:
                readers = self._readers[sha]
                readers.discard(unit)
                if readers:
                    continue
                del self._readers[sha]
                upload = self._uploaded.pop(sha, None)
                self._held.pop(sha, None)
                if upload is not None:
                    self._earlier.pop(self._prefix + sha[:_SHA_IN_NAME], None)
                    done.append(upload)
        return sum(self._delete(u.name) for u in done)

    def _line(self, line: bytes) -> bytes:
        item = orjson.loads(line)
        for part in file_parts(item.get("request")):
            found = _local_file(part)
            if found is None:
                self._gcs_part(part)
                continue
            holder, local, sha = found
            mime = part[holder].get("mimeType", part[holder].get("mime_type"))
            del part[holder]
            part.update(self._staged(local, sha, str(mime)))
        return orjson.dumps(item, option=_NL)

    def _gcs_part(self, part: dict[str, Any]) -> None:
        """A ``gs://`` part (its identity in the fragment) rewritten to what the Gemini API reads: the object
        registered, or its bytes copied through (inline, or uploaded by content as a local file is)."""
        holder = "fileData" if "fileData" in part else "file_data"
        data = part[holder]
        uri = data.get("fileUri", data.get("file_uri"))
        place, identity = untagged(uri) if isinstance(uri, str) else (uri, None)
        if not identity or not str(place).startswith("gs://"):
            return
        mime = str(data.get("mimeType", data.get("mime_type")))
        del part[holder]
        part.update(self._gcs.staged(str(place), identity, mime, self._staged))

    def _staged(self, local: Path, sha: str, mime: str) -> dict[str, Any]:
        try:
            size = local.stat().st_size
            if size <= self._inline_max:
                return {"inlineData": {"data": base64.b64encode(local.read_bytes()).decode(), "mimeType": mime}}
        except OSError as exc:
            raise DataError(f"media {str(local)!r}: cannot be read: {exc.strerror or exc}") from None
        return {"fileData": {"fileUri": self._upload(local, sha, mime), "mimeType": mime}}

    def _upload(self, local: Path, sha: str, mime: str) -> str:
        with self._guard:
            lock = self._locks.setdefault(sha, threading.Lock())
        with lock:  # the same content from two units at once: one upload, the other waits for it
            self._list_earlier()
            found = self._uploaded.get(sha) or self._earlier.get(self._prefix + sha[:_SHA_IN_NAME])
            if found is None or not self._lasts(found.expires):
                from google.genai import types

                try:
                    with api_errors(f"upload {local.name}"):
                        f = self._client.files.upload(file=str(local), config=types.UploadFileConfig(
                            mime_type=mime, display_name=self._prefix + sha[:_SHA_IN_NAME]))
                except QuotaExceeded as exc:  # the project's storage is full (other files than this run's too)
                    raise FilesQuotaFull(f"the Files API's storage is full: {exc}") from exc
                found = _Upload(str(f.name), str(f.uri), self._expiry(f))
                self.uploads += 1
                log.info("media uploaded", file=found.name, sha256=sha, bytes=local.stat().st_size)
            with self._guard:
                self._uploaded[sha] = found
                self._held[sha] = local.stat().st_size
            return found.uri

    def gone(self, error: dict[str, Any]) -> bool:
        """Whether a line's error says a media file it read is gone (the Files API deleted it before the job ran,
        or it expired while the job waited); if so the upload is forgotten, so that the retry stages the content
        again (a new upload) rather than naming the same dead file."""
        if error.get("code") != 403:
            return False
        found = _FILE_GONE.search(str(error.get("message") or ""))
        if found is None:
            return False
        name = f"files/{found.group(1)}"
        with self._guard:
            dead = [sha for sha, u in self._uploaded.items() if u.name == name]
            for sha in dead:
                del self._uploaded[sha]
                self._held.pop(sha, None)
            earlier = [d for d, u in self._earlier.items() if u.name == name]
            for display in earlier:
                del self._earlier[display]
        if dead or earlier:
            log.info("media file gone before its job read it; staged again for the retry", file=name)
        return True

    def release(self) -> int:
        """Delete every upload of this spec's media, this run's and earlier runs' (a file already gone is not an
        error, nor one that cannot be deleted now: the Files API deletes it within 48 h); how many went."""
        self._list_earlier()
        with self._guard:
            names = {u.name for u in (*self._uploaded.values(), *self._earlier.values(), *self._extra)}
            self._uploaded.clear()
            self._earlier.clear()
            self._extra.clear()
            self._held.clear()
            self._readers.clear()
        return sum(self._delete(name) for name in sorted(names))

    def _delete(self, name: str) -> bool:
        """Delete one upload; a file already gone is not an error, nor one that cannot be deleted now (the Files
        API deletes it within 48 h)."""
        try:
            with api_errors(f"delete {name}"):
                self._client.files.delete(name=name)
            return True
        except (BackendError, TransientError) as exc:
            if "HTTP 404" not in str(exc):
                log.warning("media file not deleted; the Files API deletes it within 48 h", file=name,
                            error=str(exc))
            return False

    def _lasts(self, expires: float) -> bool:
        """Whether a file expiring then will outlive a job created now."""
        return expires - self._clock() >= MEDIA_REUSE_MIN_HOURS * _HOUR

    def _expiry(self, f: Any) -> float:
        when = getattr(f, "expiration_time", None)
        return when.timestamp() if when is not None else self._clock() + MEDIA_FILE_HOURS * _HOUR

    def _list_earlier(self) -> None:
        """The media files an earlier run uploaded and the service still keeps, by display name (which carries
        160 bits of the content's sha256); of two with one name, the one that lives longer."""
        with self._list_lock:  # the staging threads wait for the one listing
            if not self._listed:
                self._listed = True
                self._list()

    def _list(self) -> None:
        from google.genai import types

        every: list[_Upload] = []  # two uploads of one content (a run killed mid-upload) are both deleted at the end
        best: dict[str, _Upload] = {}
        with api_errors("list files"):
            for f in self._client.files.list(config=types.ListFilesConfig(page_size=_FILES_PAGE)):
                name = f.display_name or ""
                if not (name.startswith(self._prefix) and len(name) == len(self._prefix) + _SHA_IN_NAME and f.uri
                        and f.name and _state(f.state) in ("ACTIVE", "STATE_UNSPECIFIED")):
                    continue
                upload = _Upload(str(f.name), str(f.uri), self._expiry(f))
                every.append(upload)
                if name not in best or upload.expires > best[name].expires:
                    best[name] = upload
        with self._guard:
            self._earlier, self._extra = best, every


Stage = Callable[[Path, str, str], dict[str, Any]]
"""A local file's part as staged (inline, or a Files API upload): (file, sha256, MIME type) -> the part."""


class GcsMedia:
    """``gs://`` media on the Gemini API, which reads Cloud Storage only through a registered file: each object
    registered once (``files.register_files`` of google-genai; it needs Google credentials that can read the
    bucket, ``google.auth.default``), or, without credentials (an API key alone), read and staged as a local
    file's bytes are (inline up to the threshold, else uploaded once by content). One outcome per object identity
    (its md5 or crc32c) per process."""

    def __init__(self, client: Any, credentials: Any | None = None, find_credentials: bool = True) -> None:
        self._client = client
        self._credentials = credentials
        self._looked = credentials is not None or not find_credentials
        self._done: dict[str, dict[str, Any]] = {}  # identity -> the part's staged member
        self._lock = threading.Lock()
        self.registered = 0
        self.copied = 0

    def staged(self, uri: str, identity: str, mime: str, stage: Stage) -> dict[str, Any]:
        """The part's staged member for one object (registered or copied once, then reused)."""
        with self._lock:  # one object at a time: a part naming it again waits and reuses the outcome
            found = self._done.get(identity)
            if found is None:
                creds = self._creds()
                found = self._register(uri, mime, creds) if creds is not None else self._copy(uri, mime, stage)
                self._done[identity] = found
            copy: dict[str, Any] = orjson.loads(orjson.dumps(found))  # each line its own
            return copy

    def _creds(self) -> Any | None:
        if not self._looked:
            self._looked = True
            self._credentials = _default_credentials()
        return self._credentials

    def _register(self, uri: str, mime: str, creds: Any) -> dict[str, Any]:
        with api_errors(f"register {uri}"):
            response = self._client.files.register_files(auth=creds, uris=[uri])
        files = response.files or []
        if not files or not files[0].uri:
            raise BackendError(f"register {uri}: the Files API registered no file")
        self.registered += 1
        log.info("media registered", object=uri, file=files[0].name)
        return {"fileData": {"fileUri": str(files[0].uri), "mimeType": mime}}

    def _copy(self, uri: str, mime: str, stage: Stage) -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="batchflow-gcs-") as scratch:
            local = Path(scratch) / PurePosixPath(uri).name
            try:
                fs, inside = url_to_fs(uri)
                get_file(fs, inside, str(local), uri, call="copy media")
            except (FileNotFoundError, OSError) as exc:
                raise DataError(f"media {uri!r}: cannot be read to copy it to the Files API: {exc}") from None
            digest = hashlib.sha256()
            with open(local, "rb") as fh:
                while chunk := fh.read(1 << 20):
                    digest.update(chunk)
            self.copied += 1
            log.info("media copied through from Cloud Storage", object=uri, bytes=local.stat().st_size)
            return stage(local, digest.hexdigest(), mime)


def media_content(display_name: str, owner: str) -> str | None:
    """The sha256 digits a media upload's display name carries when the upload is this spec's (``owner``: the
    spec's name); None for any other file (another spec's, a job's request lines, a file batchflow did not make)."""
    prefix = f"{_DISPLAY_PREFIX}{owner}-"
    rest = display_name[len(prefix):] if display_name.startswith(prefix) else ""
    return rest if len(rest) == _SHA_IN_NAME and _HEX.fullmatch(rest) else None


def contents_read(path: Path) -> set[str] | None:
    """The sha256 (the digits a display name carries) of every local file a unit's lines name: the uploads its
    job reads. None when a line names a gs:// object by identity: copied through, it was uploaded under the
    digest of bytes read then, which the lines do not hold."""
    found: set[str] = set()
    with open(path, "rb") as src:
        for line in src:
            if not any(mark in line for mark in _MARKS):
                continue
            for part in file_parts(orjson.loads(line).get("request")):
                local = _local_file(part)
                if local is not None:
                    found.add(local[2][:_SHA_IN_NAME])
                elif _names_gcs_object(part):
                    return None
    return found


def _names_gcs_object(part: dict[str, Any]) -> bool:
    data = part.get("fileData", part.get("file_data")) or {}
    uri = data.get("fileUri", data.get("file_uri"))
    place, identity = untagged(uri) if isinstance(uri, str) else (uri, None)
    return bool(identity) and str(place).startswith("gs://")


def _default_credentials() -> Any | None:
    """Google credentials of the environment (application default), with the scopes registration needs; None
    where there are none (an API key alone): gs:// media are then copied through."""
    try:
        import google.auth
        from google.auth.exceptions import DefaultCredentialsError
    except ImportError:
        return None
    scopes = ["https://www.googleapis.com/auth/cloud-platform",
              "https://www.googleapis.com/auth/devstorage.read_only"]
    try:
        creds, _ = google.auth.default(scopes=scopes)
    except DefaultCredentialsError:
        return None
    return creds


def _state(state: Any) -> str:
    return str(getattr(state, "name", state) or "STATE_UNSPECIFIED")


def _names_local_media(path: Path) -> bool:
    """Whether a unit's lines name a local file or a gs:// object by content (read in chunks)."""
    with open(path, "rb") as fh:
        tail = b""
        while chunk := fh.read(1 << 20):
            if any(mark in tail + chunk for mark in _MARKS):
                return True
            tail = chunk[-len(_MARKS[-1]):]
    return False


def _local_file(part: dict[str, Any]) -> tuple[str, Path, str] | None:
    """A ``file_data`` part naming a local file by content: (its holder key, the file, the sha256), else None."""
    holder = "fileData" if "fileData" in part else "file_data"
    data = part[holder]
    uri = data.get("fileUri", data.get("file_uri"))
    place, identity = untagged(uri) if isinstance(uri, str) else (uri, None)
    if not identity or not identity.startswith("sha256:") or not str(place).startswith("file://"):
        return None
    return holder, Path(file_uri_path(str(place))), identity[7:]


def _local_media(item: dict[str, Any]) -> Iterator[tuple[Path, str]]:
    """The local files a request line names by content: (file, sha256)."""
    for part in file_parts(item.get("request")):
        found = _local_file(part)
        if found is not None:
            yield found[1], found[2]
