"""Duplicate keys among millions of records, in memory that does not grow with the input.

A ``dict`` of every key seen grows with the input (~100 bytes a key: 500 MB at 5M records). Instead each key's
64-bit hash is kept: in a batch in memory, then, batch by batch, split by its low bits into ``_PARTITIONS`` parts
appended to one spill file (where each part of each batch starts is remembered: 8 KB a batch). At the end each
partition -- a ``1/_PARTITIONS`` share of the hashes -- is read back and checked on its own for a hash seen twice.
Only when one is (a duplicate key, or one chance in ~2^64 a pair of different keys) are the keys themselves read
again, from the shards' request lines, to name the records exactly.

Splitting a batch is one pass in Python (~0.1 µs a hash); sorting it by partition, as this did first, cost three
times that, and a file per partition opened at every spill as much again: together ~15 % of a prep.
"""

from __future__ import annotations

import shutil
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from batchflow.state.shard_files import request_key

_PARTITIONS = 1024  # 5M keys: ~5k a partition, ~0.4 MB to check one
_MASK = _PARTITIONS - 1
_BATCH = 1 << 17  # hashes held before a spill: 1 MB in an array


class KeyHashes:
    """Collects ``hash(key)`` of every record (``add`` is the hot path) and finds the ones seen twice."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self._batch = array("q")
        self.add = self._batch.append  # hash(key) in; a bound C method: ~30 ns a record
        self._file = directory / "hashes"
        self._spilled = 0  # bytes in the spill file
        self._starts: list[array[int]] = []  # per spilled batch, the offset of each part in the file, and its end

    def __len__(self) -> int:
        return len(self._batch)

    def spill_if_full(self) -> None:
        """Spill the batch once it is full (the caller checks now and then, not per record)."""
        if len(self._batch) >= _BATCH:
            self._spill()

    def repeated(self) -> set[int]:
        """The hashes that occur more than once; the spill file is removed."""
        if not self._spilled:
            found = _repeated(self._batch)
        else:
            self._spill()
            found = set()
            with open(self._file, "rb") as fh:
                for p in range(_PARTITIONS):
                    found |= _repeated(_read(fh, [(starts[p], starts[p + 1]) for starts in self._starts]))
        del self._batch[:]
        shutil.rmtree(self.dir, ignore_errors=True)
        return found

    def _spill(self) -> None:
        parts = _partition(self._batch)
        del self._batch[:]
        self.dir.mkdir(parents=True, exist_ok=True)
        starts = array("q", [self._spilled])
        with open(self._file, "ab") as fh:
            for part in parts:
                part.tofile(fh)
                self._spilled += len(part) * part.itemsize
                starts.append(self._spilled)
        self._starts.append(starts)


def _partition(batch: array[int]) -> list[array[int]]:
    parts = [array("q") for _ in range(_PARTITIONS)]
    appends = [part.append for part in parts]
    for h in batch:
        appends[h & _MASK](h)
    return parts


def _read(fh: BinaryIO, segments: list[tuple[int, int]]) -> array[int]:
    """The hashes between each (start, end) offset of the spill file."""
    hashes = array("q")
    for start, end in segments:
        if end > start:
            fh.seek(start)
            hashes.fromfile(fh, (end - start) // hashes.itemsize)
    return hashes


def _repeated(hashes: array[int]) -> set[int]:
    unique = set(hashes)
    if len(unique) == len(hashes):
        return set()
    seen: set[int] = set()
    return {h for h in hashes if h in seen or seen.add(h)}  # type: ignore[func-returns-value]


def first_duplicate(requests: Iterator[Path], suspects: set[int]) -> tuple[str, int, int] | None:
    """``(key, first ordinal, ordinal of the repeat)`` of the earliest repeated key among the shards' request lines."""
    first: dict[str, int] = {}
    ordinal = 0
    for path in requests:
        with open(path, "rb") as fh:
            for line in fh:
                ordinal += 1
                key = request_key(line)
                if hash(key) in suspects:
                    if key in first:
                        return key, first[key], ordinal
                    first[key] = ordinal
    return None
