"""A unit's local media files where the Gemini API reads them: each distinct content (sha256) uploaded once
through the Files API, or put inline when it is small; the unit's request lines rewritten to name them.

The request lines batchflow writes name a local file by ``file:///path#sha256:HEX`` (``request/media.py``): the
identity stays in the lines kept, so a file staged again is not a new request. Only what goes to the service is
rewritten, into a copy of the unit's file beside it.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from batchflow.backends.sdk import api_errors
from batchflow.errors import DataError
from batchflow.request.media import untagged
from batchflow.spec.limits import INLINE_MAX_BYTES

_MARK = b"#sha256:"
_NL = orjson.OPT_APPEND_NEWLINE


class GeminiMedia:
    """Uploads by content, remembered for the backend's life; safe to call from the staging threads."""

    def __init__(self, client: Any, inline_max: int = INLINE_MAX_BYTES) -> None:
        self._client = client
        self._inline_max = inline_max
        self._uploaded: dict[str, str] = {}  # sha256 -> the Files API file's URI
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
            found = self._uploaded.get(sha)
            if found is None:
                from google.genai import types

                with api_errors(f"upload {local.name}"):
                    f = self._client.files.upload(file=str(local), config=types.UploadFileConfig(
                        mime_type=mime, display_name=f"batchflow-media-{sha[:40]}"))
                found = self._uploaded[sha] = str(f.uri)
                self.uploads += 1
            return found


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
