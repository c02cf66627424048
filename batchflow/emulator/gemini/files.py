"""The Files API's storage: resumable uploads streamed to disk, file resources as JSON beside their data.

Layout under the store's root: `files/ID.json` (the resource) + `files/ID.data` (the bytes), and
`uploads/ID.json` + `uploads/ID.part` for uploads in progress (so an upload survives a restart too).
Data is never held whole in memory: shards can be hundreds of megabytes.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from batchflow.emulator.jobs.store import new_id, page_token, parse_page_token, read_json, rfc3339, write_json_atomic
from batchflow.emulator.wire.errors import ApiError, invalid_argument, not_found
from batchflow.emulator.wire.request_checks import field
from batchflow.libs.mime import by_extension

FILE_TTL_SECONDS = 48 * 3600
# The service's words when an upload would pass the project's file storage, as it answers (a 429 seen 2025-10,
# github.com/alphaXiv/feedback/issues/16, and googleapis/python-genai#1172 2025-07: quota FileStorageBytesPerProject)
_STORAGE_FULL = ("You exceeded your current quota, please check your plan and billing details. For more information "
                 "on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits.\n* Quota exceeded for "
                 "metric: generativelanguage.googleapis.com/file_storage_bytes, limit: {limit}")
_COPY_BUFFER = 1 << 20
_BLANK_AT_LINE_START = re.compile(rb"\n[ \t\r\n]")
_BLANK = frozenset(b" \t\r\n")
_NEWLINE = ord("\n")


class Readable(Protocol):
    """Where upload bytes come from (a socket's buffered reader)."""

    def read(self, size: int = -1, /) -> bytes:
        """Up to `size` bytes."""

    def readinto(self, buffer: bytearray | memoryview, /) -> int | None:
        """Fills `buffer` with what came, up to its length; how many bytes."""


@dataclass
class FileRecord:
    """One file resource; `seq` orders listings (newest first) and makes page tokens stable."""

    id: str
    seq: int
    display_name: str | None
    mime_type: str
    size_bytes: int
    create_time: float
    source: str  # UPLOADED | GENERATED
    lines: int | None = None  # its request lines, counted as the upload came in (None: not known)

    def resource(self, base_url: str) -> dict[str, Any]:
        """The File resource as the Files API returns it."""
        res: dict[str, Any] = {
            "name": f"files/{self.id}", "mimeType": self.mime_type, "sizeBytes": str(self.size_bytes),
            "createTime": rfc3339(self.create_time), "updateTime": rfc3339(self.create_time),
            "expirationTime": rfc3339(self.create_time + FILE_TTL_SECONDS),
            "uri": f"{base_url}/v1beta/files/{self.id}",
            "downloadUri": f"{base_url}/v1beta/files/{self.id}:download?alt=media",
            "state": "ACTIVE", "source": self.source,
        }
        if self.display_name:
            res["displayName"] = self.display_name
        return res


@dataclass
class _LineCount:
    """An upload's request lines (its non-blank lines), counted chunk by chunk as it arrives, so that a create
    need not read the file again. Exact while every line starts with a non-blank byte (JSONL as it is written);
    anything else leaves the count unknown, and the file is read when a job is made of it."""

    newlines: int = 0
    at_line_start: bool = True
    exact: bool = True

    def add(self, buffer: bytearray, size: int) -> None:
        """Count the first `size` bytes of `buffer`."""
        if not size or not self.exact:
            return
        if (self.at_line_start and buffer[0] in _BLANK) or _BLANK_AT_LINE_START.search(buffer, 0, size):
            self.exact = False
            return
        self.newlines += buffer.count(b"\n", 0, size)
        self.at_line_start = buffer[size - 1] == _NEWLINE

    def total(self) -> int | None:
        return self.newlines + (not self.at_line_start) if self.exact else None


@dataclass
class _Upload:
    id: str
    display_name: str | None
    mime_type: str
    declared_size: int | None


class FileStore:
    """Files and uploads on disk, indexed in memory; safe to call from many threads."""

    def __init__(self, root: Path, clock: Callable[[], float], storage_quota: int | None = None,
                 note: Callable[[str], None] | None = None) -> None:
        """``storage_quota``: the bytes of uploaded files the project may hold at once (the fault plan's
        ``quota.file_storage_bytes``); an upload past it is refused, and ``note`` counts the refusal."""
        self._quota = storage_quota
        self._note = note
        self._files_dir = root / "files"
        self._uploads_dir = root / "uploads"
        self._files_dir.mkdir(parents=True, exist_ok=True)
        self._uploads_dir.mkdir(parents=True, exist_ok=True)
        self._clock = clock
        self._lock = threading.Lock()
        self._files = {r.id: r for r in map(_load_record, sorted(self._files_dir.glob("*.json"))) if r}
        self._counts: dict[str, _LineCount] = {}  # uploads under way (one that survived a restart has none)
        self._seq = max((r.seq for r in self._files.values()), default=0)

    def start_upload(self, meta: Any, header_type: str | None, header_size: str | None) -> str:
        """Open a resumable upload session; returns its id."""
        file = field(meta, "file") if isinstance(meta, Mapping) else None
        size = field(file, "sizeBytes") or header_size
        upload = _Upload(id=new_id(24), display_name=field(file, "displayName"),
                         mime_type=field(file, "mimeType") or header_type or "application/octet-stream",
                         declared_size=int(size) if size not in (None, "") else None)
        self._check_room(upload.declared_size or 0)
        write_json_atomic(self._uploads_dir / f"{upload.id}.json", asdict(upload))
        (self._uploads_dir / f"{upload.id}.part").touch()
        with self._lock:
            self._counts[upload.id] = _LineCount()
        return upload.id

    def received(self, upload_id: str) -> int:
        """How many bytes of an upload have arrived."""
        return self._part(upload_id).stat().st_size

    def receive(self, upload_id: str, offset: int, body: Readable, length: int) -> int:
        """Append one chunk read from `body` at `offset`; returns the bytes received so far."""
        part = self._part(upload_id)
        if offset != part.stat().st_size:
            raise invalid_argument(f"Upload offset {offset} does not match the {part.stat().st_size} bytes received")
        with self._lock:
            count = self._counts.pop(upload_id, None)  # back once the chunk is whole: a chunk cut short loses it
        # one buffer, filled again and again: a fresh megabyte per read costs the kernel its pages each time
        buffer = bytearray(min(length, _COPY_BUFFER))
        view = memoryview(buffer)
        with open(part, "ab") as out:
            left = length
            while left:
                size = body.readinto(view[:left]) or 0
                if not size:
                    raise invalid_argument("Upload chunk ended before its Content-Length")
                out.write(view[:size])
                if count is not None:
                    count.add(buffer, size)
                left -= size
        if count is not None:
            with self._lock:
                self._counts[upload_id] = count
        return offset + length

    def finalize(self, upload_id: str) -> FileRecord:
        """Turn a complete upload into an ACTIVE file resource."""
        part = self._part(upload_id)
        upload = _Upload(**read_json(self._uploads_dir / f"{upload_id}.json"))
        size = part.stat().st_size
        if upload.declared_size is not None and upload.declared_size != size:
            raise invalid_argument(f"Upload has {size} bytes but {upload.declared_size} were declared")
        self._check_room(size)
        with self._lock:
            count = self._counts.pop(upload_id, None)
        record = self._add(new_id(12), part, upload.mime_type, upload.display_name, "UPLOADED",
                           count.total() if count is not None else None)
        (self._uploads_dir / f"{upload_id}.json").unlink(missing_ok=True)
        return record

    def register(self, uri: str, data: bytes) -> FileRecord:
        """A Cloud Storage object registered as a file (``files:register``): its bytes as they were read now, its
        MIME type from the object's name. It lives as an upload does (48 h); its bytes are the bucket's, so they do
        not count against the project's storage."""
        part = self._uploads_dir / f"{new_id(24)}.part"
        part.write_bytes(data)
        mime = by_extension(Path(uri).suffix) or "application/octet-stream"
        return self._add(new_id(12), part, mime, None, "REGISTERED")

    def add_generated(self, file_id: str, data: Path, mime_type: str, display_name: str) -> FileRecord:
        """Register a batch's output (moved in from `data`) as a GENERATED file."""
        return self._add(file_id, data, mime_type, display_name, "GENERATED")

    def get(self, file_id: str) -> FileRecord:
        """A file by id; 404 when unknown."""
        with self._lock:
            record = self._files.get(file_id)
        if record is None or self._expired(record):
            raise not_found(f"File files/{file_id} not found.")
        return record

    def exists(self, file_id: str) -> bool:
        """Whether a file is known (no 404)."""
        with self._lock:
            return file_id in self._files

    def data_path(self, file_id: str) -> Path:
        """Where a file's bytes are kept."""
        self.get(file_id)
        return self._files_dir / f"{file_id}.data"

    def media(self, file_id: str) -> bytes:
        """The bytes of a file a request's `file_data` names, as the model reads them: a file that does not exist,
        or has expired (48 h after its upload, when the service deletes it), is refused with the service's 403."""
        with self._lock:
            record = self._files.get(file_id)
        if record is None or self._expired(record):
            raise ApiError(403, "PERMISSION_DENIED",
                           f"You do not have permission to access the File {file_id} or it may not exist.")
        return (self._files_dir / f"{file_id}.data").read_bytes()

    def list(self, size: int, token: str | None) -> tuple[list[FileRecord], str | None]:
        """One page, newest first, and the token of the next page (None on the last)."""
        after = parse_page_token(token)
        with self._lock:
            ordered = sorted(self._files.values(), key=lambda r: -r.seq)
        rest = [r for r in ordered if (after is None or r.seq < after) and not self._expired(r)]
        page = rest[:size]
        return page, page_token(page[-1].seq) if len(rest) > size else None

    def age(self, seconds: float) -> int:
        """Move every file's upload `seconds` into the past (a test's way to let 48 h go by); how many files."""
        with self._lock:
            for record in self._files.values():
                record.create_time -= seconds
                write_json_atomic(self._files_dir / f"{record.id}.json", asdict(record))
            return len(self._files)

    def _check_room(self, size: int) -> None:
        """429 RESOURCE_EXHAUSTED, as the service answers, when `size` more bytes would pass the storage quota.
        Counted: the uploaded files that live (a batch's output is the job's, not the project's uploads)."""
        if self._quota is None:
            return
        with self._lock:
            held = sum(r.size_bytes for r in self._files.values() if r.source == "UPLOADED" and not self._expired(r))
        if held + size > self._quota:
            if self._note is not None:
                self._note("quota_file_storage_bytes")
            raise ApiError(429, "RESOURCE_EXHAUSTED", _STORAGE_FULL.format(limit=self._quota))

    def _expired(self, record: FileRecord) -> bool:
        """An upload the service has deleted by now: 48 h after it came (a batch's output is the job's to end)."""
        return record.source != "GENERATED" and self._clock() >= record.create_time + FILE_TTL_SECONDS

    def delete(self, file_id: str) -> None:
        """Forget a file and its bytes; 404 when unknown."""
        with self._lock:
            if self._files.pop(file_id, None) is None:
                raise not_found(f"File files/{file_id} not found.")
        (self._files_dir / f"{file_id}.json").unlink(missing_ok=True)
        (self._files_dir / f"{file_id}.data").unlink(missing_ok=True)

    def _add(self, file_id: str, data: Path, mime: str, display_name: str | None, source: str,
             lines: int | None = None) -> FileRecord:
        with self._lock:
            self._seq += 1
            record = FileRecord(id=file_id, seq=self._seq, display_name=display_name, mime_type=mime,
                                size_bytes=data.stat().st_size, create_time=self._clock(), source=source,
                                lines=lines)
            os.replace(data, self._files_dir / f"{file_id}.data")
            write_json_atomic(self._files_dir / f"{file_id}.json", asdict(record))
            self._files[file_id] = record
        return record

    def _part(self, upload_id: str) -> Path:
        part = self._uploads_dir / f"{upload_id}.part"
        if not upload_id.isalnum() or not (self._uploads_dir / f"{upload_id}.json").exists():
            raise not_found(f"Upload {upload_id} not found.")
        return part


def _load_record(path: Path) -> FileRecord | None:
    try:
        return FileRecord(**read_json(path))
    except (OSError, ValueError, TypeError):
        return None  # a stray or foreign file in the store is not a resource
