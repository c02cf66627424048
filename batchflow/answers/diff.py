"""The current input against the answers the last generation kept: what is carried, what is sent, and why.

Both sides are lines in partition files (``partitions.py``), the key's JSON first and the rest after its last
space (a key may hold spaces; the rest never does):

- the kept index (``keep.py``): ``KEY DIGEST FLAG PART:LINE`` as ``KEY <32 hex><o|p|r><part>:<line>``;
- the current records (``Spill``, written while preparing): ``KEY <32 hex><ordinal>``.

A partition of each is read at a time, the index into a dict by key: memory holds one partition, whatever the
input's size. One split per line and no parse of what is not needed: this loop runs once per record.
"""

from __future__ import annotations

import bisect
import itertools
from array import array
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from batchflow.answers import OK, PERMANENT
from batchflow.answers.partitions import PartitionWriter, partition_lines

_EXAMPLES = 5
_FLUSH = 1 << 19  # integers held over all parts (4 MB) before each part's are appended to its file
_KINDS = ("new", "changed", "unchanged", "retried", "removed", "rejected")
# A record's mark in ``send`` (one byte each, by ordinal; kept as ``gen-N/marks``): sent, carried by the diff (a
# pointer says where its answer is), rejected (a bad record), or carried in place -- the earlier generation's
# record at the same ordinal, whose answer's flag (``OK`` / ``PERMANENT``) is then the mark itself.
SEND, CARRIED, REJECTED = b"\x01", b"\x00", b"\x02"


@dataclass
class Diff:
    """Counts of records by what happens to them, with a few example keys of each."""

    new: int = 0
    changed: int = 0
    unchanged: int = 0  # carried: the kept answer is used
    retried: int = 0  # the kept result was a failure that may pass, or --retry-errors
    removed: int = 0  # kept answers of keys no longer in the input
    rejected: int = 0  # records never sent: an error row each (bad records under on_bad_record: skip, and ...)
    over_limit: int = 0  # ... those of them over the model's input limit, which count against max_failed
    examples: dict[str, list[str]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {k: getattr(self, k) for k in _KINDS} | {"over_limit": self.over_limit, "examples": self.examples}


class KeyMetTwice(Exception):
    """A record's key is the key of a record carried in place: the input holds it twice."""

    def __init__(self, key: str, ordinal: int) -> None:
        super().__init__(key)
        self.key = key
        self.ordinal = ordinal


class Spill:
    """The current records' (key, digest, ordinal) by key partition, written during preparation."""

    def __init__(self, directory: Path, partitions: int) -> None:
        self.partitions = partitions
        self.dir = directory
        self._writer = PartitionWriter(directory, partitions)
        self.add = self._writer.add  # (key JSON, line): the hot loop formats the line itself

    def close(self) -> None:
        self._writer.flush()


class Pointers:
    """Carried records, by the part of the new generation they fall in: (ordinal, part, line, flag) each."""

    def __init__(self, directory: Path, part_starts: list[int]) -> None:
        self.dir = directory
        self.starts = part_starts  # the ordinal each part starts at, for ``add_many``
        self._bufs: dict[int, array[int]] = {}
        self._held = 0
        self.files: dict[int, str] = {}
        directory.mkdir(parents=True, exist_ok=True)

    def add_many(self, pointers: list[tuple[int, int, int, int]]) -> None:
        starts, bufs, find = self.starts, self._bufs, bisect.bisect_right
        for pointer in pointers:
            index = find(starts, pointer[0]) - 1
            buf = bufs.get(index)
            if buf is None:
                buf = bufs[index] = array("q")
            buf.extend(pointer)
        self._held += 4 * len(pointers)
        if self._held >= _FLUSH:
            self._flush_all()

    def _flush_all(self) -> None:
        for held in list(self._bufs):
            self._flush(held)
        self._held = 0

    def close(self) -> dict[int, str]:
        """Every part's pointer file name, by part index."""
        for index in list(self._bufs):
            self._flush(index)
        return self.files

    def _flush(self, index: int) -> None:
        name = f"part-{index:05d}.q"
        with open(self.dir / name, "ab") as fh:
            self._bufs.pop(index).tofile(fh)
        self.files[index] = name


def _in_place(found: bytes, send: bytearray, firsts: list[int]) -> bool:
    """Whether a leftover index entry (``DIGEST+FLAG+PART:LINE``) is a record carried in place rather than removed:
    such a record kept its ordinal, and its mark is its flag."""
    part, row = found[33:].split(b":")
    ordinal = firsts[int(part)] + int(row) if int(part) < len(firsts) else 0
    return 0 < ordinal < len(send) and send[ordinal] in (OK[0], PERMANENT[0])


def read_pointers(path: Path) -> dict[int, tuple[int, int, int]]:
    """ordinal -> (part, line, flag) of the carried records of one part."""
    values = array("q")
    with open(path, "rb") as fh:
        values.frombytes(fh.read())
    return {values[i]: (values[i + 1], values[i + 2], values[i + 3]) for i in range(0, len(values), 4)}


def diff(index: Path, spill: Spill, send: bytearray, pointers: Pointers, retry_errors: bool,
         in_place: int = 0, firsts: list[int] | None = None) -> Diff:
    """Compare partition by partition; ``send[ordinal]`` is cleared for every carried record.

    ``in_place`` records were found unchanged at their place while preparing (and carried then): their keys are
    left over in the index like removed ones, so they are taken off the removed count, and a leftover is named as
    removed only if its place (``firsts``: the ordinal each earlier part starts at) was not one of them."""
    result = Diff()
    counts = dict.fromkeys(_KINDS, 0)
    examples: dict[str, list[bytes]] = {k: [] for k in _KINDS}
    keep = {OK[0]} if retry_errors else {OK[0], PERMANENT[0]}
    for p in range(spill.partitions):
        kept = dict(line[:-1].rsplit(b" ", 1) for line in partition_lines(index, p))
        carried: list[tuple[int, int, int, int]] = []
        pop = kept.pop
        for line in partition_lines(spill.dir, p):
            key, current = line[:-1].rsplit(b" ", 1)
            found = pop(key, None)
            if found is not None and in_place and _in_place(found, send, firsts or []):
                raise KeyMetTwice(str(orjson.loads(key)), int(current[32:]))
            if found is None:
                kind = "new"
            elif found[:32] != current[:32]:
                kind = "changed"
            elif found[32] not in keep:
                kind = "retried"
            else:
                ordinal = int(current[32:])
                part, row = found[33:].split(b":")
                carried.append((ordinal, int(part), int(row), found[32]))
                send[ordinal] = CARRIED[0]
                kind = "unchanged"
            counts[kind] += 1
            if len(examples[kind]) < _EXAMPLES:
                examples[kind].append(key)
        pointers.add_many(carried)
        counts["removed"] += len(kept)
        if len(examples["removed"]) < _EXAMPLES:
            examples["removed"] += [k for k, found in itertools.islice(kept.items(), 64)
                                    if not (in_place and _in_place(found, send, firsts or []))
                                    ][:_EXAMPLES - len(examples["removed"])]
    counts["removed"] -= in_place
    counts["unchanged"] += in_place
    for kind in _KINDS:
        setattr(result, kind, counts[kind])
        if examples[kind]:
            result.examples[kind] = [str(orjson.loads(k)) for k in examples[kind]]
    return result
