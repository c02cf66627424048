"""One door to fsspec for every path batchflow reads or writes, local or ``gs://``.

With ``STORAGE_EMULATOR_HOST`` set (the variable Google's own clients read), ``gs://`` goes to that emulator with
anonymous credentials: no credential lookup, so nothing probes the network beyond the emulator.

Every gs:// call is bounded (libs/deadlines.py): each HTTP request by gcsfs' aiohttp timeouts, and each call as a
whole, gcsfs' six attempts included, by fsspec's own ``timeout=`` (``call_bound``). A write goes through
``upload_when_done``: gcsfs' streaming writes (``fs.open(..., "wb")``) send each block with no bound on a send
stalled half-way (aiohttp has no send timeout, and ``fs.open`` takes no ``timeout=`` for its blocks), so the bytes
go to a local file first, then to the bucket in one ``put_file`` bounded by their size.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from tempfile import mkstemp
from typing import Any, BinaryIO

from fsspec.asyn import AsyncFileSystem
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
