"""Duplicate keys among millions of records, in memory that does not grow with the input.

A ``dict`` of every key seen grows with the input (~100 bytes a key: 500 MB at 5M records). Instead each key's
64-bit hash is kept: in a batch in memory, then, batch by batch, sorted and spilled to one of ``_PARTITIONS``
files by its top bits (a sorted batch is one slice per partition). At the end each partition -- a
``1/_PARTITIONS`` share of the hashes -- is checked on its own for a hash seen twice. Only when one is (a
duplicate key, or one chance in ~2^64 a pair of different keys) are the keys themselves read again, from the
shard manifests, to name the records exactly.
"""

from __future__ import annotations

import bisect
import shutil
from array import array
from collections.abc import Iterator
from pathlib import Path

import orjson

_PARTITIONS = 256  # 5M keys: ~20k a partition, ~1.5 MB to check one
_BATCH = 1 << 17  # hashes held before a spill: 1 MB in an array, ~5 MB as Python ints while sorted
_SHIFT = 64 - (_PARTITIONS.bit_length() - 1)
_BOUNDS = [(p << _SHIFT) - (1 << 63) for p in range(1, _PARTITIONS)]  # the first hash of partitions 1..


class KeyHashes:
    """Collects ``hash(key)`` of every record (``add`` is the hot path) and finds the ones seen twice."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self._batch = array("q")
        self.add = self._batch.append  # hash(key) in; a bound C method: ~30 ns a record
        self._spilled = False

    def __len__(self) -> int:
        return len(self._batch)

    def spill_if_full(self) -> None:
        """Spill the batch once it is full (the caller checks now and then, not per record)."""
        if len(self._batch) >= _BATCH:
            self._spill()

    def repeated(self) -> set[int]:
        """The hashes that occur more than once; the spill files are removed."""
        if not self._spilled:
            found = _repeated(self._batch)
        else:
            self._spill()
            found = set()
            for p in range(_PARTITIONS):
                path = self.dir / f"p{p:03d}"
                if path.exists():
                    found |= _repeated(array("q", path.read_bytes()))
        del self._batch[:]
        shutil.rmtree(self.dir, ignore_errors=True)
        return found

    def _spill(self) -> None:
        hashes = array("q", sorted(self._batch))
        del self._batch[:]
        self.dir.mkdir(parents=True, exist_ok=True)
        start = 0
        for p, end in enumerate([*(bisect.bisect_left(hashes, b) for b in _BOUNDS), len(hashes)]):
            if end > start:
                with open(self.dir / f"p{p:03d}", "ab") as fh:
                    hashes[start:end].tofile(fh)
            start = end
        self._spilled = True


def _repeated(hashes: array[int]) -> set[int]:
    unique = set(hashes)
    if len(unique) == len(hashes):
        return set()
    seen: set[int] = set()
    return {h for h in hashes if h in seen or seen.add(h)}  # type: ignore[func-returns-value]


def first_duplicate(manifests: Iterator[Path], suspects: set[int]) -> tuple[str, int, int] | None:
    """``(key, first ordinal, ordinal of the repeat)`` of the earliest repeated key among the manifests' lines."""
    first: dict[str, int] = {}
    ordinal = 0
    for path in manifests:
        with open(path, "rb") as fh:
            for line in fh:
                ordinal += 1
                key = orjson.loads(line)["key"]
                if hash(key) in suspects:
                    if key in first:
                        return key, first[key], ordinal
                    first[key] = ordinal
    return None
