"""One door to fsspec for every path batchflow reads or writes, local or ``gs://``.

With ``STORAGE_EMULATOR_HOST`` set (the variable Google's own clients read), ``gs://`` goes to that emulator with
anonymous credentials: no credential lookup, so nothing probes the network beyond the emulator.

Every gs:// call is bounded (libs/deadlines.py): each HTTP request by gcsfs' aiohttp timeouts, and each call as a
whole, gcsfs' six attempts included, by fsspec's own ``timeout=`` (``call_bound``). A write goes through
``upload_when_done``: gcsfs' streaming writes (``fs.open(..., "wb")``) send each block with no bound on a send
stalled half-way (aiohttp has no send timeout, and ``fs.open`` takes no ``timeout=`` for its blocks), so the bytes
go to a local file first, then to the bucket in one ``put_file`` bounded by their size. A streamed read goes
through ``open_read``: gcsfs' own files (``fs.open(..., "rb")``) fetch each block with no bound on the block as a
whole, so a peer that trickles (a byte before each timeout between bytes fires) would keep a read going for ever;
here each block is one ``cat_file`` bounded by its size, as a transfer is.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from tempfile import mkstemp
from typing import Any, BinaryIO

from fsspec.asyn import AsyncFileSystem
from fsspec.compression import compr
from fsspec.core import get_compression
from fsspec.core import url_to_fs as _url_to_fs
from fsspec.spec import AbstractFileSystem

from batchflow.errors import InputError, SpecError
from batchflow.libs.deadlines import Deadlines, bounded, deadlines, gcsfs_options, transfer_timeout


def storage_options(url: str) -> dict[str, Any]:
    """The fsspec options for a URL: every gs:// request bounded (libs/deadlines.py); anonymous access when a GCS
    emulator is named."""
    if not url.startswith(("gs://", "gcs://")):
        return {}
    options = gcsfs_options(deadlines())
    if os.environ.get("STORAGE_EMULATOR_HOST"):
        # gcsfs >= 2026 asks the bucket type over gRPC, which hangs against an emulator (docs/google-apis.md, "Traps").
        os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
        options["token"] = "anon"
    return options


def url_to_fs(url: str) -> tuple[AbstractFileSystem, str]:
    """The filesystem and the path inside it, as ``fsspec.core.url_to_fs`` gives them."""
    try:
        return _url_to_fs(url, **storage_options(url))  # type: ignore[no-any-return]
    except ImportError as exc:  # fsspec's own words name the package, not how to get it with batchflow
        extra = "gcs" if url.startswith(("gs://", "gcs://")) else None
        if extra is None:
            raise
        raise InputError(f"{url}: gs:// needs the gcsfs package: pip install 'batchflow[{extra}]'") from exc


def spec_filesystem(url: str, field: str) -> tuple[AbstractFileSystem, str]:
    """``url_to_fs`` for a path written in the spec at ``field``: an unknown protocol, or one whose package is
    missing (gs:// without gcsfs), is a SpecError naming the field."""
    try:
        return url_to_fs(url)
    except InputError as exc:
        raise SpecError(f"{field}: {exc}") from None
    except (ImportError, ValueError) as exc:
        raise SpecError(f"{field} {url!r}: {exc}") from None


def gcs_host() -> str:
    """The host gs:// calls go to: the emulator named by ``STORAGE_EMULATOR_HOST``, else Google's."""
    named = os.environ.get("STORAGE_EMULATOR_HOST", "")
    return named.split("://", 1)[-1].rstrip("/") or "storage.googleapis.com"


def call_bound(fs: AbstractFileSystem, size: int = 0, limits: Deadlines | None = None) -> dict[str, float]:
    """fsspec's ``timeout=`` for one call of a remote filesystem that moves ``size`` bytes: the client's own
    attempts bounded as a whole (the sync wrapper cancels the call) by ``limits`` (the defaults, else the spec's
    ``retry.call_attempts``); nothing for a local disk, which takes none."""
    if not isinstance(fs, AsyncFileSystem):
        return {}
    d = limits or deadlines()
    return {"timeout": max(d.worst_call, transfer_timeout(d, size))}


def remote(call: str, url: str) -> AbstractContextManager[None]:
    """A timeout inside as the one line a run ends with (exit 75): ``call`` on ``url``, and the host it went to."""
    return bounded(f"{call} {url}", gcs_host() if url.startswith(("gs://", "gcs://")) else url, deadlines())


def put_file(fs: AbstractFileSystem, local: str, target: str, url: str, call: str = "upload",
             limits: Deadlines | None = None) -> None:
    """``local`` to ``target`` (``url`` as the user knows it) in one call, bounded by its size (``call_bound``)."""
    with remote(call, url):
        fs.put_file(local, target, **call_bound(fs, os.path.getsize(local), limits))


def get_file(fs: AbstractFileSystem, source: str, local: str, url: str, call: str = "download",
             limits: Deadlines | None = None) -> None:
    """``source`` (``url`` as the user knows it) to the local file ``local`` in one call, bounded by the size its
    metadata gives (``call_bound``): a peer that stops sending ends the call instead of the run waiting forever."""
    with remote(call, url):
        size = int(fs.info(source, **call_bound(fs, 0, limits)).get("size") or 0)
        fs.get_file(source, local, **call_bound(fs, size, limits))


READ_BLOCK = 4 << 20  # bytes each request of a streamed gs:// read asks for (gcsfs' own blocks are 5 MiB)


@contextmanager
def open_read(fs: AbstractFileSystem, path: str, compression: str | None = None,
              limits: Deadlines | None = None) -> Iterator[BinaryIO]:
    """``path`` open for reading front to back (``compression`` as ``fs.open`` takes it, "infer" among them). On
    gs://, by blocks of ``READ_BLOCK`` bytes, each one call bounded by its size (``call_bound``): a read that stops
    moving, or moves slower than a transfer is still called moving, ends as a timeout (named by ``remote``) at
    its block's bound instead of never. Any other filesystem opens the path as it does."""
    if not _is_gcs(fs):
        with fs.open(path, "rb", compression=compression) as opened:
            yield opened
        return
    size = int(fs.info(path, **call_bound(fs, 0, limits)).get("size") or 0)
    with io.BufferedReader(_BlockReads(fs, path, size, limits), READ_BLOCK) as buffered:
        codec = get_compression(path, compression) if compression else None
        if codec is None:
            yield buffered
            return
        with compr[codec](buffered, mode="rb") as decompressed:
            yield decompressed


class _BlockReads(io.RawIOBase):
    """The bytes of a remote object, one bounded ``cat_file`` per block (``open_read``)."""

    def __init__(self, fs: AbstractFileSystem, path: str, size: int, limits: Deadlines | None) -> None:
        self._fs, self._path, self._size, self._limits = fs, path, size, limits
        self._at = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        want = min(len(buffer), READ_BLOCK, self._size - self._at)
        if want <= 0:
            return 0
        data = self._fs.cat_file(self._path, start=self._at, end=self._at + want,
                                 **call_bound(self._fs, want, self._limits))
        buffer[:len(data)] = data
        self._at += len(data)
        return len(data)


def _is_gcs(fs: AbstractFileSystem) -> bool:
    protocols = fs.protocol if isinstance(fs.protocol, tuple | list) else (fs.protocol,)
    return bool({"gs", "gcs"} & set(protocols))


@contextmanager
def upload_when_done(fs: AbstractFileSystem, target: str, url: str, call: str = "upload",
                     spool: str | None = None, limits: Deadlines | None = None) -> Iterator[BinaryIO]:
    """A local file (in ``spool``, else the temporary directory, ``TMPDIR``: never the state's own folder, whose
    files a gs:// state pushes) to write ``url``'s bytes to, uploaded in one
    bounded ``put_file`` once the block completes: an object appears whole or not at all, and an upload that
    stops moving ends as ``CallTimedOut`` instead of hanging the run."""
    fd, temp = mkstemp(prefix=".upload.", suffix=".part", dir=spool)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
        put_file(fs, temp, target, url, call, limits)
    finally:
        with suppress(OSError):
            os.unlink(temp)
