"""Stream request lines into shard files cut by request count and by bytes, deterministically."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from batchflow.errors import DataError
from batchflow.limits import JobSize

_BUFFER = 1 << 20


@dataclass(frozen=True)
class ShardInfo:
    index: int
    count: int
    bytes: int
    digest: str  # blake2b of the request lines, 16 hex digits
    requests: str  # file names inside the shard directory
    manifest: str


def shard_names(index: int) -> tuple[str, str]:
    """The request file and manifest file names of shard ``index``."""
    return f"shard-{index:05d}.jsonl", f"shard-{index:05d}.manifest.jsonl"


class ShardWriter:
    """Writes request lines (and their manifest lines) to shard files; ``directory=None`` only counts."""

    def __init__(self, directory: Path | None, size: JobSize) -> None:
        self.dir = directory
        self.size = size
        self.shards: list[ShardInfo] = []
        self._count = 0
        self._bytes = 0
        self._hash = hashlib.blake2b(digest_size=8)
        self._files: tuple[IO[bytes], IO[bytes]] | None = None

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        """Close whatever is open; a shard cut short by an error is not counted."""
        self._close_files()

    def add(self, line: bytes, manifest_line: bytes, where: str) -> None:
        """Append one request line; starts a new shard when this one would pass a limit."""
        if len(line) > self.size.max_bytes:
            raise DataError(f"{where}: the request is {len(line):,} bytes, more than a whole job may hold "
                            f"(jobs.max_bytes = {self.size.max_bytes:,})")
        if self._count and (self._count >= self.size.max_requests
                            or self._bytes + len(line) > self.size.max_bytes):
            self._cut()
        if self._count == 0:
            self._open()
        self._count += 1
        self._bytes += len(line)
        self._hash.update(line)
        if self._files:
            self._files[0].write(line)
            self._files[1].write(manifest_line)

    def close(self) -> list[ShardInfo]:
        """Finish the last shard and return every shard written, in order."""
        if self._count:
            self._cut()
        return self.shards

    def _open(self) -> None:
        if self.dir is None:
            return
        requests, manifest = shard_names(len(self.shards))
        # held open across add() calls and closed in _cut(): a context manager cannot span them
        self._files = (open(self.dir / requests, "wb", buffering=_BUFFER),  # noqa: SIM115
                       open(self.dir / manifest, "wb", buffering=_BUFFER))  # noqa: SIM115

    def _close_files(self) -> None:
        if self._files:
            for fh in self._files:
                fh.close()
            self._files = None

    def _cut(self) -> None:
        self._close_files()
        requests, manifest = shard_names(len(self.shards))
        self.shards.append(ShardInfo(len(self.shards), self._count, self._bytes, self._hash.hexdigest(),
                                     requests, manifest))
        self._count = 0
        self._bytes = 0
        self._hash = hashlib.blake2b(digest_size=8)
