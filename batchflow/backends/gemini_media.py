"""A unit's local media files where the Gemini API reads them: each distinct content (sha256) uploaded once
through the Files API, or put inline when it is small; the unit's request lines rewritten to name them.

The request lines batchflow writes name a local file by ``file:///path#sha256:HEX`` (``request/media.py``): the
identity stays in the lines kept, so a file staged again is not a new request. Only what goes to the service is
rewritten, into a copy of the unit's file beside it.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson

from batchflow.backends.sdk import api_errors
from batchflow.errors import DataError
from batchflow.request.media import untagged
from batchflow.spec.limits import INLINE_MAX_BYTES, MEDIA_FILE_HOURS, MEDIA_REUSE_MIN_HOURS

_MARK = b"#sha256:"
_DISPLAY_PREFIX = "batchflow-media-"
_SHA_IN_NAME = 40  # hex digits of the sha256 in an upload's display name (display names are capped at 512)
_FILES_PAGE = 100
_HOUR = 3600.0
_NL = orjson.OPT_APPEND_NEWLINE


class GeminiMedia:
    """Uploads by content, found again at the service (their display names carry the sha256) so that a second run
    or a retry reuses them, but only while they will outlive the job: the Files API deletes a file 48 h after its
    upload, so one with less than a day to live is uploaded again. Safe to call from the staging threads."""

    def __init__(self, client: Any, inline_max: int = INLINE_MAX_BYTES,
                 clock: Callable[[], float] = time.time) -> None:
        self._client = client
        self._inline_max = inline_max
        self._clock = clock
        self._uploaded: dict[str, tuple[str, float]] = {}  # sha256 -> (the Files API file's URI, when it expires)
        self._listed = False  # whether the service's earlier uploads were looked up (one paged list, once)
        self._earlier: dict[str, tuple[str, float]] = {}  # display name -> (URI, expiry) of earlier runs' uploads
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self.uploads = 0  # files this backend uploaded (a figure for logs and tests)

    def rewritten(self, path: Path) -> Path | None:
        """A copy of the unit's lines with its local media staged, or None when they name no local file."""
        if not _names_local_media(path):
            return None
        out = path.with_name(path.name + ".staged")
        with open(path, "rb") as src, open(out, "wb") as dst:
            for line in src:
                dst.write(self._line(line) if _MARK in line else line)
        return out

    def _line(self, line: bytes) -> bytes:
        item = orjson.loads(line)
        for part in _file_parts(item.get("request")):
            holder = "fileData" if "fileData" in part else "file_data"
            data = part[holder]
            uri = data.get("fileUri", data.get("file_uri"))
            mime = data.get("mimeType", data.get("mime_type"))
            place, identity = untagged(uri) if isinstance(uri, str) else (uri, None)
            if not identity or not identity.startswith("sha256:") or not str(place).startswith("file://"):
                continue
            local = Path(_file_path(str(place)))
            sha = identity[7:]
            del part[holder]
            part.update(self._staged(local, sha, str(mime)))
        return orjson.dumps(item, option=_NL)

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
            found = self._uploaded.get(sha) or self._earlier.get(_DISPLAY_PREFIX + sha[:_SHA_IN_NAME])
            if found is None or not self._lasts(found[1]):
                from google.genai import types

                with api_errors(f"upload {local.name}"):
                    f = self._client.files.upload(file=str(local), config=types.UploadFileConfig(
                        mime_type=mime, display_name=_DISPLAY_PREFIX + sha[:_SHA_IN_NAME]))
                found = self._uploaded[sha] = (str(f.uri), self._expiry(f))
                self.uploads += 1
            return found[0]

    def _lasts(self, expires: float) -> bool:
        """Whether a file expiring then will outlive a job created now."""
        return expires - self._clock() >= MEDIA_REUSE_MIN_HOURS * _HOUR

    def _expiry(self, f: Any) -> float:
        when = getattr(f, "expiration_time", None)
        return when.timestamp() if when is not None else self._clock() + MEDIA_FILE_HOURS * _HOUR

    def _list_earlier(self) -> None:
        """The media files an earlier run uploaded and the service still keeps, by display name (which carries
        160 bits of the content's sha256); of two with one name, the one that lives longer."""
        with self._guard:
            if self._listed:
                return
            self._listed = True
        from google.genai import types

        found: dict[str, tuple[str, float]] = {}
        with api_errors("list files"):
            for f in self._client.files.list(config=types.ListFilesConfig(page_size=_FILES_PAGE)):
                name = f.display_name or ""
                if name.startswith(_DISPLAY_PREFIX) and f.uri and _state(f.state) in ("ACTIVE", "STATE_UNSPECIFIED"):
                    known = found.get(name)
                    expires = self._expiry(f)
                    if known is None or expires > known[1]:
                        found[name] = (str(f.uri), expires)
        self._earlier = found


def _state(state: Any) -> str:
    return str(getattr(state, "name", state) or "STATE_UNSPECIFIED")


def _names_local_media(path: Path) -> bool:
    with open(path, "rb") as fh:
        tail = b""
        while chunk := fh.read(1 << 20):
            if _MARK in tail + chunk:
                return True
            tail = chunk[-len(_MARK):]
    return False


def _file_path(uri: str) -> str:
    from urllib.parse import unquote, urlsplit

    return unquote(urlsplit(uri).path)


def _file_parts(request: Any) -> Iterator[dict[str, Any]]:
    if not isinstance(request, dict):
        return
    contents = list(request.get("contents") or [])
    for name in ("systemInstruction", "system_instruction"):
        if isinstance(request.get(name), dict):
            contents.append(request[name])
    for content in contents:
        for part in (content.get("parts") or []) if isinstance(content, dict) else []:
            if isinstance(part, dict) and isinstance(part.get("fileData", part.get("file_data")), dict):
                yield part
