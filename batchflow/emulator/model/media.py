"""A request's media parts, resolved to the bytes they name, as the services read them before the model runs.

An `inline_data` part carries its bytes (base64); a `file_data` part names them by URI, which the engine's
`MediaReader` resolves (a Files API file of the emulator's own store, a `gs://` object of the GCS emulator) or
refuses with the service's own error. The model names each part it read in its answer as `[MIME SHA12 BYTES
bytes]`, so a test can prove which bytes reached it, and counts its tokens by the documented rates.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from batchflow.emulator.wire.errors import invalid_argument
from batchflow.emulator.wire.request_checks import field
from batchflow.errors import InputError
from batchflow.libs.storage import url_to_fs
from batchflow.spec import limits

MediaReader = Callable[[str], "bytes | None"]
"""The bytes a `file_data` URI names; None for a URI the emulator cannot read offline (an https URL). Raises
ApiError as the service does for a file that is missing or expired."""

SHA_DIGITS = 12
_FILES_URI = re.compile(r"/v1(?:beta)?/files/([a-z0-9-]+)")  # a Files API file's `uri`, as files.get gives it


def reader(files: Callable[[str], bytes] | None = None) -> MediaReader:
    """A MediaReader over the emulator's stores: `gs://` from Cloud Storage (the GCS emulator), `files/ID` or a
    Files API URI (`…/v1beta/files/ID`) from `files` (the Files API store, when the surface has one)."""

    def read(uri: str) -> bytes | None:
        if uri.startswith("gs://"):
            return read_gcs(uri)
        file_id = _file_id(uri)
        if file_id is not None and files is not None:
            return files(file_id)
        return None

    return read


def read_gcs(uri: str) -> bytes:
    """A `gs://` object's bytes; a missing object (or bucket) is the line's 400, naming the URI."""
    try:
        fs, path = url_to_fs(uri)
        data: bytes = fs.cat_file(path)
        return data
    except (FileNotFoundError, InputError, OSError) as exc:
        raise invalid_argument(f"Cannot read {uri}: the object does not exist or is not readable ({exc}).") from None


def _file_id(uri: str) -> str | None:
    if uri.startswith("files/"):
        return uri.removeprefix("files/")
    found = _FILES_URI.search(uri) if uri.startswith(("http://", "https://")) else None
    return found.group(1) if found else None


@dataclass(frozen=True)
class Media:
    """One media part as the model saw it (data None: named by a URI the emulator did not read)."""

    mime_type: str
    data: bytes | None
    uri: str | None = None

    def label(self) -> str:
        """`[MIME SHA12 BYTES bytes]`, or `[MIME URI]` for a part that was not read."""
        if self.data is None:
            return f"[{self.mime_type} {self.uri}]"
        return f"[{self.mime_type} {hashlib.sha256(self.data).hexdigest()[:SHA_DIGITS]} {len(self.data)} bytes]"

    def tokens(self) -> int:
        return limits.media_tokens(self.mime_type, self.data) if self.data is not None else limits.IMAGE_TOKENS


def resolve(request: Mapping[str, Any], read: MediaReader | None) -> list[Media]:
    """Every media part of a generate request (system instruction first, then contents, in order), read;
    raises ApiError for inline data over the request's limit, a MIME type the model refuses, or a URI `read`
    refuses."""
    return _resolved(_parts(request), read, limits.media_types("generate"), "GenerateContentRequest")


def resolve_content(content: Any, read: MediaReader | None, mime_types: frozenset[str]) -> list[Media]:
    """Every media part of an embed request's one content, in order, read as `resolve` reads a generate
    request's; `mime_types` are those the embedding model takes."""
    parts = field(content, "parts") if isinstance(content, Mapping) else None
    found = [(f"content.parts[{j}]", part) for j, part in enumerate(parts if isinstance(parts, list) else [])]
    return _resolved(iter(found), read, mime_types, "EmbedContentRequest")


def has_media(content: Any) -> bool:
    """Whether a content holds a part other than text (inline data or a file)."""
    parts = field(content, "parts") if isinstance(content, Mapping) else None
    return any(isinstance(p, Mapping) and (field(p, "inlineData") is not None or field(p, "fileData") is not None)
               for p in (parts if isinstance(parts, list) else []))


def _resolved(parts: Iterator[tuple[str, Any]], read: MediaReader | None, mime_types: frozenset[str],
              message: str) -> list[Media]:
    found: list[Media] = []
    inline_bytes = 0
    for where, part in parts:
        inline, file = field(part, "inlineData"), field(part, "fileData")
        if inline is not None:
            encoded = field(inline, "data") or ""
            inline_bytes += len(encoded)
            if inline_bytes > limits.INLINE_REQUEST_MAX_BYTES:
                raise invalid_argument(f"Request payload size exceeds the limit: {limits.INLINE_REQUEST_MAX_BYTES} "
                                       "bytes of inline data.")
            found.append(Media(_mime(inline, where, mime_types, message), _decode(encoded, where)))
        elif file is not None:
            uri = field(file, "fileUri")
            if not isinstance(uri, str) or not uri:
                raise invalid_argument(f"* {message}.{where}.file_data.file_uri: a URI is required")
            mime = _mime(file, where, mime_types, message)
            found.append(Media(mime, read(uri) if read is not None else None, uri))
    return found


def _parts(request: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    contents = field(request, "contents") or []
    for where, content in [("system_instruction", field(request, "systemInstruction")),
                           *((f"contents[{i}]", c) for i, c in enumerate(contents))]:
        for j, part in enumerate(field(content, "parts") or []):
            yield f"{where}.parts[{j}]", part


def _mime(part: Any, where: str, mime_types: frozenset[str], message: str) -> str:
    mime = field(part, "mimeType")
    if not isinstance(mime, str) or not mime:
        raise invalid_argument(f"* {message}.{where}: mime_type is required")
    if mime not in mime_types:
        raise invalid_argument(f"Unsupported MIME type: {mime}")
    return mime


def _decode(encoded: Any, where: str) -> bytes:
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, TypeError, ValueError):
        raise invalid_argument(f"Invalid value at '{where}.inline_data.data' (TYPE_BYTES), Base64 decoding "
                               "failed") from None
