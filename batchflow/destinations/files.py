"""The ``files`` destination: one output file, local or remote (``gs://``), written through fsspec.

A local output is written to a temporary file beside the path and renamed onto it once complete, so the path
holds the previous output or the whole new one, never half of one. A remote output is written straight to the
object without committing, and committed only once complete (GCS makes an object visible when its upload is
finalized). A path ending in ``.gz`` (or another suffix fsspec knows) is compressed.

Formats, by ``output.format`` or the extension under the compression suffix:

- ``jsonl``: one row per line, as docs/spec.md's "An output row" shows; one pass over the rows.
- ``csv``: the same rows flattened, with a header. Two passes: the first finds the columns, the second writes,
  so memory stays flat. The columns, in this order:

  1. fixed: ``key, status, text, finish_reason, usage.prompt_tokens, usage.output_tokens, usage.total_tokens,
     attempts, error.code, error.message`` — ``text`` becomes ``embedding`` when rows carry embeddings and
     no text (both appear if both are present);
  2. any other top-level field (``response``, extra ``usage.*`` / ``error.*`` fields), in first-seen order;
  3. ``parsed.<field>`` for each field of a parsed JSON object (``parsed`` itself when an answer parsed to
     something else, e.g. a list), in first-seen order;
  4. ``record.<field>`` for each field of the input record, in first-seen order.

  Cells: strings as they are, numbers as written, ``true``/``false``, empty for null or absent, anything else
  (lists, objects, the embedding) as JSON text.
- ``parquet``: the columns of a ``bigquery`` output, typed, written in row groups with pyarrow (the extra
  ``batchflow[parquet]``); one pass (``destinations/parquet.py`` says why that shape).
"""

from __future__ import annotations

import csv
import gzip
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from tempfile import mkstemp
from typing import Any, BinaryIO, Protocol

import orjson
from fsspec.compression import compr
from fsspec.implementations.local import LocalFileSystem
from fsspec.spec import AbstractFileSystem
from fsspec.utils import infer_compression

from batchflow.destinations.base import Rows
from batchflow.destinations.parquet import write_parquet
from batchflow.errors import BatchflowError, SpecError
from batchflow.libs.jsonio import dumps_line, dumps_str
from batchflow.libs.storage import put_file, spec_filesystem
from batchflow.sources.files import format_from_extension, pick_format
from batchflow.spec.spec import OutputSpec

_BUFFER = 1 << 20


class _Output(Protocol):
    """What rows are written to: a file, or a compressor in front of one."""

    def write(self, data: bytes, /) -> object: ...

    def close(self) -> None: ...


def _cannot_write(path: str, exc: OSError) -> BatchflowError:
    return BatchflowError(f"{path}: cannot write: {exc.strerror or exc}")


@contextmanager
def _writing(path: str) -> Iterator[None]:
    """Turn an OSError of our own writing (never of making the rows) into one line naming the path."""
    try:
        yield
    except OSError as exc:
        raise _cannot_write(path, exc) from None


class _Sink:
    """Large buffered writes to the output (one call per MiB, whatever sits below: a file, gzip, GCS)."""

    def __init__(self, out: _Output, path: str) -> None:
        self._out, self._path = out, path
        # One growing bytearray, not a list of parts: keeping thousands of small bytes objects alive makes
        # orjson's allocations several times slower.
        self._buf = bytearray()

    def write(self, data: bytes) -> None:
        self._buf += data
        if len(self._buf) >= _BUFFER:
            self.flush()

    def flush(self) -> None:
        with _writing(self._path):
            self._out.write(bytes(self._buf))  # a copy: nothing below may keep a view of a buffer we reuse
        self._buf.clear()


class _TextSink:
    """What ``csv.writer`` writes to: text, encoded into a ``_Sink``."""

    def __init__(self, sink: _Sink) -> None:
        self._sink = sink

    def write(self, text: str) -> None:
        self._sink.write(text.encode())


Writer = Callable[[Rows, _Sink, OutputSpec], int]


def write_jsonl(rows: Rows, sink: _Sink, _spec: OutputSpec) -> int:
    """One JSON object per line, one pass."""
    count, write, dumps = 0, sink.write, orjson.dumps
    for row in rows():
        try:
            line = dumps(row, option=orjson.OPT_APPEND_NEWLINE)
        except orjson.JSONEncodeError:  # a record from YAML may need dumps_line's lenient path
            line = dumps_line(row)
        write(line)
        count += 1
    return count


_FIXED = (
    "key",
    "status",
    "text",
    "finish_reason",
    "usage.prompt_tokens",
    "usage.output_tokens",
    "usage.total_tokens",
    "attempts",
    "error.code",
    "error.message",
)
_FLATTENED = ("usage", "error", "parsed", "record")  # an object here becomes name.field columns
_GROUPS = {"parsed": 1, "record": 2}  # after the fixed columns and other fields (group 0)


def flatten(row: dict[str, Any]) -> dict[str, Any]:
    """``{"usage": {"total_tokens": 3}}`` -> ``{"usage.total_tokens": 3}``, one level, for the known objects."""
    flat = row.copy()
    for name in _FLATTENED:
        value = flat.get(name)
        if type(value) is dict:
            del flat[name]
            flat.update({f"{name}.{field}": inner for field, inner in value.items()})
    return flat


def csv_columns(names: Iterable[str]) -> list[str]:
    """The columns for the flattened field names seen, in the order the module docstring gives."""
    seen = dict.fromkeys(names)
    fixed = list(_FIXED)
    if "embedding" in seen:
        fixed[2:3] = ["text", "embedding"] if "text" in seen else ["embedding"]
    rest = [name for name in seen if name not in fixed]
    rest.sort(key=lambda name: _GROUPS.get(name.split(".", 1)[0], 0))  # stable: first-seen order within
    return fixed + rest


def _cell(value: Any) -> str:
    convert = _CELLS.get(type(value))
    return convert(value) if convert else dumps_str(value)


_CELLS: dict[type, Callable[[Any], str]] = {
    str: str,
    int: str,
    float: repr,
    bool: lambda value: "true" if value else "false",
    type(None): lambda _value: "",
}


def write_csv(rows: Rows, sink: _Sink, _spec: OutputSpec) -> int:
    """A header and one line per row (RFC 4180); a first pass over the rows finds the columns."""
    seen: dict[str, Any] = {}
    for row in rows():
        seen.update(flatten(row))  # only the keys matter; C-level update beats a loop over names
    columns = csv_columns(seen)
    known = frozenset(columns)
    writer = csv.writer(_TextSink(sink))
    writer.writerow(columns)
    count = 0
    for row in rows():
        flat = flatten(row)
        if not flat.keys() <= known:
            raise BatchflowError(f"the rows changed between passes: new fields {sorted(flat.keys() - known)}")
        writer.writerow([v if type(v) is str else _cell(v) for v in map(flat.get, columns)])
        count += 1
    return count


WRITERS: dict[str, Writer] = {"jsonl": write_jsonl, "csv": write_csv, "parquet": write_parquet}
EXTENSIONS: dict[str, str] = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet"}


def writer_for(spec: OutputSpec) -> Writer:
    """The writer of the output's format (given, or from the extension); a SpecError if there is none here."""
    path = str(spec.path)
    return pick_format("output", WRITERS, spec.format or format_from_extension(path, EXTENSIONS), path)


def _read_umask() -> int:
    mask = os.umask(0o022)  # the only portable way to read it is to set it; done once, at import
    os.umask(mask)
    return mask


_UMASK = _read_umask()


@contextmanager
def _local_target(path: str, shown: str) -> Iterator[BinaryIO]:
    """A temporary file beside ``path``, renamed onto it only if the block completes."""
    directory, base = os.path.split(os.path.abspath(path))
    with _writing(shown):
        os.makedirs(directory, exist_ok=True)
        fd, temp = mkstemp(prefix=f".{base}.", suffix=".part", dir=directory)
    try:
        with os.fdopen(fd, "wb", buffering=0) as f:
            yield f
            with _writing(shown):
                os.fsync(f.fileno())
        with _writing(shown):
            os.chmod(temp, 0o666 & ~_UMASK)  # mkstemp makes 0600; the output is an ordinary file
            os.replace(temp, path)
    except BaseException:
        with suppress(OSError):
            os.unlink(temp)
        raise


@contextmanager
def _remote_target(fs: AbstractFileSystem, path: str, shown: str) -> Iterator[BinaryIO]:
    """A local file uploaded onto the object only if the block completes (libs/storage.py: one upload bounded by
    its size, where a streaming write could stall half-way forever); nothing half-written is ever visible."""
    with _writing(shown):
        fd, temp = mkstemp(prefix=".batchflow-output.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
        with _writing(shown):
            put_file(fs, temp, path, shown, "write")
    finally:
        with suppress(OSError):
            os.unlink(temp)


def _gzip(f: BinaryIO) -> gzip.GzipFile:
    # No file name and a zero mtime in the header: the same rows give the same bytes. Level 6 (gzip's own
    # default) is about twice as fast as Python's 9, for a few percent of size.
    return gzip.GzipFile(filename="", mode="wb", fileobj=f, mtime=0, compresslevel=6)


@contextmanager
def _compressed(f: BinaryIO, path: str) -> Iterator[_Output]:
    """``f``, compressed as the path's suffix says (closed, trailer written, before the target commits)."""
    codec = infer_compression(path)
    if codec is None:
        yield f
        return
    out: _Output = _gzip(f) if codec == "gzip" else compr[codec](f, mode="wb")
    try:
        yield out
    finally:
        with _writing(path):
            out.close()



class FilesDestination:
    """Rows written to one file, in the format its spec or extension names."""

    def __init__(self, spec: OutputSpec) -> None:
        if not spec.path:
            raise SpecError("output.path is required for output type 'files'")
        self._path, self._spec = spec.path, spec
        self._write_rows = writer_for(spec)
        self._fs, self._root = spec_filesystem(spec.path, "output.path")

    def check(self) -> None:
        if not isinstance(self._fs, LocalFileSystem):
            return  # a bucket's permissions show only on the write itself
        if os.path.isdir(self._root):
            raise BatchflowError(f"{self._path}: cannot write: it is a directory")
        parent = os.path.dirname(os.path.abspath(self._root))
        while not os.path.exists(parent):  # the nearest part of the path that exists decides; nothing is made
            parent = os.path.dirname(parent)
        if not os.path.isdir(parent):
            raise BatchflowError(f"{self._path}: cannot write: {parent} is not a directory")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise BatchflowError(f"{self._path}: cannot write: Permission denied ({parent})")

    def write(self, rows: Rows) -> int:
        with self._target() as raw, _compressed(raw, self._path) as out:
            sink = _Sink(out, self._path)
            count = self._write_rows(rows, sink, self._spec)
            sink.flush()
        return count

    def _target(self) -> AbstractContextManager[BinaryIO]:
        # The one place local and remote differ: a rename is atomic on a disk, an upload's commit on a bucket.
        if isinstance(self._fs, LocalFileSystem):
            return _local_target(self._root, self._path)
        return _remote_target(self._fs, self._root, self._path)
