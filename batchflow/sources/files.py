"""The ``files`` source: a local path or glob, or ``gs://bucket/glob``, read through fsspec.

The files a glob matches are read in sorted order, each from its first line; a compressed file (``.gz``, …)
is decompressed on the fly. Formats, by ``source.format`` or by the extension under the compression suffix:

- ``jsonl`` (``.jsonl``, ``.ndjson``): streamed in large chunks, one ``orjson.loads`` per line; blank lines
  are skipped but counted, so ``file:line`` matches an editor. This is the format for large inputs.
- ``json`` (``.json``): a top-level array of objects, streamed element by element; a malformed element ends
  the read even under ``on_bad_record: skip`` (there is no telling where the next one starts).
- ``csv`` (``.csv``): the first row names the columns, every value stays a string; a row with another number
  of fields is a bad record. Bytes that are not UTF-8 end the read in both modes (a row may span lines).
- ``parquet`` (``.parquet``): streamed record batch by record batch with pyarrow (the extra
  ``batchflow[parquet]``); ``where`` is ``file.parquet:row N`` (``sources/parquet.py``).
- ``media`` (never by extension): each file is one record, not read here: ``path`` (absolute, or gs://, so a
  ``{media: "{{ path }}"}`` part reads it as it is), ``name``, ``mime_type`` (from the first bytes of a local
  file, else the extension), ``size_bytes`` and ``relative_path`` (from the glob's root: the default key).
"""

from __future__ import annotations

import csv
import hashlib
import os
import zlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from io import StringIO
from typing import Any, BinaryIO, TypeVar

from fsspec.utils import infer_compression

from batchflow.errors import DataError, SpecError
from batchflow.libs.arrow import INSTALL_HINT, pyarrow_missing
from batchflow.libs.jsonio import ArrayError, JSONDecodeError, dumps, dumps_canonical, iter_array, loads, type_name
from batchflow.libs.mime import HEAD, by_extension, sniff
from batchflow.libs.storage import call_bound, open_read, remote, spec_filesystem
from batchflow.sources.base import BadRecord, Item, Reject, Source, bad_record_handler
from batchflow.sources.parquet import read_parquet
from batchflow.spec.limits import LIMITS
from batchflow.spec.spec import SourceSpec

_CHUNK = 1 << 20
_BOM = b"\xef\xbb\xbf"

Reader = Callable[[BinaryIO, str, BadRecord], Iterator[Item]]
"""(binary file, its display name, the bad-record handler) -> its records."""


def _line_lists(f: BinaryIO) -> Iterator[list[bytes]]:
    """The file's lines without b"\\n" (nor a leading BOM), a list per chunk read: flat memory, few calls."""
    rest = b""
    chunk = f.read(_CHUNK).removeprefix(_BOM)
    while chunk:
        lines = (rest + chunk).split(b"\n")
        rest = lines.pop()
        yield lines
        chunk = f.read(_CHUNK)
    if rest:
        yield [rest]


def _lines(f: BinaryIO) -> Iterator[bytes]:
    for lines in _line_lists(f):
        yield from lines


def _json_error(exc: JSONDecodeError) -> str:
    return "not valid UTF-8" if "not valid UTF-8" in exc.msg else f"malformed JSON: {exc}"


def read_jsonl(f: BinaryIO, name: str, bad: BadRecord) -> Iterator[Item]:
    """Records of a JSON Lines file; each line must be a JSON object."""
    line = 0
    parse = loads  # a local: this loop runs once per record
    for lines in _line_lists(f):  # a loop per chunk, not a generator per line: one resumption less per record
        for raw in lines:
            line += 1
            try:
                record = parse(raw)
            except JSONDecodeError as exc:
                if raw.strip():  # blank lines are rare: they cost only on this slow path
                    bad(f"{name}:{line}", _json_error(exc), raw)
                continue
            if type(record) is not dict:
                bad(f"{name}:{line}", f"expected an object, got {type_name(record)}", raw)
                continue
            yield record, raw, name, line


def read_jsonl_unparsed(f: BinaryIO, name: str, bad: BadRecord) -> Iterator[Item]:
    """The lines of a JSON Lines file that are not blank, *not parsed*: ``(None, raw, name, line)``. For a caller
    that may not need the record (one unchanged since the last run) and parses the others itself."""
    line = 0
    for lines in _line_lists(f):
        for raw in lines:
            line += 1
            if raw and not raw.isspace():
                yield None, raw, name, line  # type: ignore[misc]


def parse_line(raw: bytes) -> tuple[dict[str, Any] | None, str]:
    """A JSON Lines record from its line, or None and why not (as ``read_jsonl`` would report it)."""
    try:
        record = loads(raw)
    except JSONDecodeError as exc:
        return None, _json_error(exc)
    if type(record) is not dict:
        return None, f"expected an object, got {type_name(record)}"
    return record, ""


def read_json(f: BinaryIO, name: str, bad: BadRecord) -> Iterator[Item]:
    """Records of a file holding one top-level JSON array of objects (1-based ``file.json[N]``)."""
    index = 0
    elements = iter_array(f, _CHUNK)
    while True:
        index += 1
        try:
            element = next(elements)
        except StopIteration:
            return
        except ArrayError as exc:
            raise DataError(f"{name}[{index}]: {exc}") from None
        if type(element) is not dict:
            bad(f"{name}[{index}]", f"expected an object, got {type_name(element)}", dumps(element))
            continue
        yield element, None, f"{name}[{index}]", 0


def _text_lines(f: BinaryIO, name: str) -> Iterator[str]:
    """Decoded physical lines (newline kept, as csv wants), so a decoding error names its exact line."""
    for line, raw in enumerate(_lines(f), start=1):
        try:
            text = raw.decode()
        except UnicodeDecodeError:
            raise DataError(f"{name}:{line}: not valid UTF-8") from None
        yield text + "\n"


def _csv_raw(row: list[str]) -> bytes:
    out = StringIO()
    csv.writer(out).writerow(row)
    return out.getvalue().encode()


def _csv_header(reader: Any, name: str) -> list[str] | None:
    header: list[str] | None = next(reader, None)
    for column, count in _counts(header or []).items():
        if count > 1:
            raise DataError(f"{name}:1: duplicate column {column!r}")
    return header


def _counts(items: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in items:
        counts[item] = counts.get(item, 0) + 1
    return counts


# A cell may hold as much as one job's input file holds (spec/limits.py): Python's csv refuses a field over
# 128 KiB by default, which a long document in one cell passes; a record that large then meets the backend's limit.
CSV_FIELD_LIMIT = max(limit.max_bytes for limit in LIMITS.values())


def read_csv(f: BinaryIO, name: str, bad: BadRecord) -> Iterator[Item]:
    """Records of a CSV file with a header row; ``where`` is the line the row starts on."""
    if csv.field_size_limit() < CSV_FIELD_LIMIT:
        csv.field_size_limit(CSV_FIELD_LIMIT)
    reader = csv.reader(_text_lines(f, name))
    start = 1
    try:
        header = _csv_header(reader, name)
        if header is None:
            return
        start = reader.line_num + 1
        for row in reader:
            where, start = f"{name}:{start}", reader.line_num + 1
            if not row:
                continue
            if len(row) != len(header):
                bad(where, f"expected {len(header)} fields, got {len(row)}", _csv_raw(row))
                continue
            yield dict(zip(header, row, strict=True)), None, where, 0
    except csv.Error as exc:
        raise DataError(f"{name}:{start}: malformed CSV: {exc}") from None


def read_media(f: BinaryIO, name: str, bad: BadRecord) -> Iterator[Item]:
    """One open file as one media record (``FilesSource`` makes them from its listing instead, reading no more
    than a local file's first bytes: ``_media_record``)."""
    head = f.read(HEAD)
    size = len(head)
    while chunk := f.read(_CHUNK):
        size += len(chunk)
    base = name.rsplit("/", 1)[-1]
    mime = sniff(head) or by_extension(os.path.splitext(base)[1]) or ""
    yield {"path": name, "name": base, "mime_type": mime, "size_bytes": size, "relative_path": base}, None, name, 0


READERS: dict[str, Reader] = {"jsonl": read_jsonl, "json": read_json, "csv": read_csv, "parquet": read_parquet,
                              "media": read_media}
EXTENSIONS: dict[str, str] = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".parquet": "parquet",
}


def format_from_extension(path: str, extensions: dict[str, str] = EXTENSIONS) -> str | None:
    """``jsonl`` for ``x.jsonl.gz``: the format named by the extension under any compression suffix."""
    name = path.rstrip("/").rsplit("/", 1)[-1]
    if infer_compression(name):
        name = name.rsplit(".", 1)[0]
    return extensions.get(os.path.splitext(name)[1].lower())


T = TypeVar("T")


def pick_format(section: str, table: Mapping[str, T], fmt: str | None, path: str) -> T:
    """The reader or writer of a format, or a SpecError naming ``section`` (source / output) and why (a format
    whose extra is not installed says which to install)."""
    if fmt is None:
        raise SpecError(f"{section}.path {path!r}: cannot tell the format from the extension; set {section}.format")
    if fmt == "parquet" and pyarrow_missing():
        raise SpecError(f"{section}.format 'parquet' {INSTALL_HINT}")
    try:
        return table[fmt]
    except KeyError:
        known = ", ".join(table)
        raise SpecError(f"{section}.format {fmt!r} is not supported (supported: {known})") from None


def _reader(fmt: str | None, path: str) -> Reader:
    return pick_format("source", READERS, fmt, path)



def _version(info: dict[str, Any]) -> str:
    """What changes when the content does: a hash or generation if the filesystem has one, else mtime."""
    for field in ("md5Hash", "crc32c", "generation", "etag", "ETag", "mtime", "LastModified", "updated"):
        if info.get(field) is not None:
            return f"{field}={info[field]}"
    return ""


class _Hashing:
    """A binary file whose bytes, as they are read, also go into a digest (no second pass over the input)."""

    def __init__(self, f: BinaryIO, digest: Any) -> None:
        self._f = f
        self._update = digest.update

    def read(self, size: int = -1) -> bytes:
        data = self._f.read(size)
        self._update(data)
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)


def _glob_root(pattern: str) -> str:
    """The folder a glob's matches are named from: its path up to the first segment with a wildcard."""
    kept: list[str] = []
    for segment in pattern.split("/"):
        if any(c in segment for c in "*?["):
            break
        kept.append(segment)
    else:
        kept = kept[:-1]  # no wildcard: the path names one file, named from its folder
    return "/".join(kept)


class FilesSource(Source):
    """Records from the files a path or glob matches, local or remote, in sorted order."""

    def __init__(self, spec: SourceSpec, reject: Reject | None = None) -> None:
        if not spec.path:
            raise SpecError("source.path is required for source type 'files'")
        self._pattern = spec.path
        self._format = spec.format or format_from_extension(spec.path)
        self._read = _reader(self._format, spec.path)
        self._bad = bad_record_handler(spec.on_bad_record, reject)
        self._fs, self._root = spec_filesystem(spec.path, "source.path")
        self._content = hashlib.sha256()

    def items(self, unparsed: bool = False) -> Iterator[Item]:
        """The records; ``unparsed``: a JSON Lines file's lines come as ``(None, raw, …)``, for ``parse_line``."""
        read = read_jsonl_unparsed if unparsed and self._read is read_jsonl else self._read
        self._content = hashlib.sha256()
        if read is read_media:
            yield from self._media_items()
            return
        for path, _info in self._match():  # the file is opened here, not in a helper generator: one frame less
            name = self._display(path)  # to resume per record (measured: ~4 % of a prep)
            self._content.update(b"\x00file\x00")  # where one file ends and the next begins; names do not count
            try:  # a gs:// read is bounded block by block (libs/storage.py); one that timed out is named (exit 75)
                with remote("read", name), self._open(path) as f:
                    yield from read(_Hashing(f, self._content), name, self._bad)  # type: ignore[arg-type]
            except (OSError, EOFError, zlib.error) as exc:
                raise DataError(f"{name}: cannot read: {exc}") from None

    def _open(self, path: str) -> AbstractContextManager[Any]:
        """A streamed format read front to back, block by block, each block bounded (libs/storage.py); Parquet,
        which seeks, through the filesystem's own file (each read bounded per request only)."""
        if self._format == "parquet":
            return self._fs.open(path, "rb", compression="infer")  # type: ignore[no-any-return]
        return open_read(self._fs, path, compression="infer")

    def fingerprint(self) -> str:
        entries = [(self._display(path), info.get("size"), _version(info)) for path, info in self._match()]
        return hashlib.sha256(dumps_canonical(entries)).hexdigest()

    def content_digest(self) -> str:
        """The digest of the bytes ``items`` read (decompressed), file after file: touching or copying a file
        leaves it as it is."""
        return self._content.hexdigest()

    def describe(self) -> str:
        count = len(self._match())
        return f"{count} {'file' if count == 1 else 'files'} matching {self._pattern} ({self._format})"

    def _media_items(self) -> Iterator[Item]:
        """One record per file; its content stands in the digest by its listing (size and version): the bytes
        themselves are the requests' to know (their media parts carry the sha256)."""
        root = _glob_root(self._root)
        for path, info in self._match():
            record = self._media_record(path, info, root)
            self._content.update(dumps_canonical([record["path"], record["size_bytes"], _version(info)]))
            yield record, None, record["path"], 0

    def _media_record(self, path: str, info: dict[str, Any], root: str) -> dict[str, Any]:
        local = "://" not in self._pattern
        full = path if local else str(self._fs.unstrip_protocol(path))
        mime = None
        if local:
            try:
                with open(path, "rb") as fh:
                    mime = sniff(fh.read(HEAD))
            except OSError as exc:
                raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from None
        name = path.rsplit("/", 1)[-1]
        relative = path[len(root):].lstrip("/") if root and path.startswith(root) else name
        return {"path": full, "name": name, "mime_type": mime or by_extension(os.path.splitext(name)[1]) or "",
                "size_bytes": int(info.get("size") or 0), "relative_path": relative}

    def _match(self) -> list[tuple[str, dict[str, Any]]]:
        """The matching files, sorted, with what the filesystem knows of each *now*."""
        self._fs.invalidate_cache()  # remote listings are cached per instance; the answer must be current
        try:
            with remote("list", self._pattern):
                found = self._fs.glob(self._root, detail=True, **call_bound(self._fs))
        except OSError as exc:
            raise DataError(f"{self._pattern}: cannot list: {exc}") from None
        files = [(path, info) for path, info in found.items() if info.get("type") != "directory"]
        files.sort(key=lambda item: item[0])
        if not files:
            raise DataError(f"no file matches {self._pattern!r}")
        return files

    def _display(self, path: str) -> str:
        """The path as the user would recognise it: with its protocol, or relative if they wrote it so."""
        if "://" in self._pattern:
            return str(self._fs.unstrip_protocol(path))
        return path if os.path.isabs(self._pattern) else os.path.relpath(path)
