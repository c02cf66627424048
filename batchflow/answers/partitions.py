"""Lines split by a hash of a key into partition files, so that one partition at a time is all memory holds."""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from pathlib import Path

_FLUSH = 1 << 22  # bytes buffered over all partitions before they are appended to their files


def partitions_for(records: int) -> int:
    """A power of two giving partitions of ~8,192 entries (16 at least): a partition's dict stays a few MB."""
    n = 16
    while n * 8192 < records:
        n *= 2
    return n


def partition_of(key_json: bytes, partitions: int) -> int:
    return zlib.crc32(key_json) & (partitions - 1)


class PartitionWriter:
    """Appends lines to ``<dir>/p-NNNNN``, by ``partition_of`` their key."""

    def __init__(self, directory: Path, partitions: int) -> None:
        self.dir = directory
        self.partitions = partitions
        self._mask = partitions - 1
        self._bufs = [bytearray() for _ in range(partitions)]
        self._held = 0
        directory.mkdir(parents=True, exist_ok=True)

    def add(self, key_json: bytes, line: bytes) -> None:
        """``line`` ends with a newline and holds no other."""
        self._bufs[zlib.crc32(key_json) & self._mask] += line
        self._held += len(line)
        if self._held >= _FLUSH:
            self.flush()

    def flush(self) -> None:
        for p, buf in enumerate(self._bufs):
            if buf:
                with open(self.dir / f"p-{p:05d}", "ab") as fh:
                    fh.write(buf)
                self._bufs[p] = bytearray()
        self._held = 0


def partition_lines(directory: Path, p: int) -> Iterator[bytes]:
    """The lines of partition ``p`` (none when it was never written)."""
    try:
        with open(directory / f"p-{p:05d}", "rb") as fh:
            yield from fh
    except FileNotFoundError:
        return
