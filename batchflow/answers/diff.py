"""The current input against the answers the last generation kept: what is carried, what is sent, and why."""

from __future__ import annotations

import bisect
from array import array
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from batchflow.answers import OK, PERMANENT
from batchflow.answers.partitions import PartitionWriter, partition_lines

_EXAMPLES = 5
_FLUSH = 1 << 16  # pointers held per part before they are appended to its file


@dataclass
class Diff:
    """Counts of records by what happens to them, with a few example keys of each."""

    new: int = 0
    changed: int = 0
    unchanged: int = 0  # carried: the kept answer is used
    retried: int = 0  # the kept result was a failure that may pass, or --retry-errors
    removed: int = 0  # kept answers of keys no longer in the input
    rejected: int = 0  # bad records (on_bad_record: skip): an error row each, never sent
    examples: dict[str, list[str]] = field(default_factory=dict)

    def note(self, kind: str, key_json: bytes) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        found = self.examples.setdefault(kind, [])
        if len(found) < _EXAMPLES:
            found.append(str(orjson.loads(key_json)))

    @property
    def sent(self) -> int:
        return self.new + self.changed + self.retried

    def as_dict(self) -> dict[str, object]:
        return {k: getattr(self, k) for k in ("new", "changed", "unchanged", "retried", "removed", "rejected")} | {
            "examples": self.examples}


class Spill:
    """The current records' (ordinal, digest, key) by key partition, written during preparation."""

    def __init__(self, directory: Path, partitions: int) -> None:
        self.partitions = partitions
        self._writer = PartitionWriter(directory, partitions)
        self.dir = directory

    def add(self, ordinal: int, digest_hex: bytes, key_json: bytes) -> None:
        self._writer.add(key_json, b"%d %s %s\n" % (ordinal, digest_hex, key_json))

    def close(self) -> None:
        self._writer.flush()


class Pointers:
    """Carried records, by the part of the new generation they fall in: (ordinal, part, line, flag) each."""

    def __init__(self, directory: Path, part_starts: list[int]) -> None:
        self.dir = directory
        self._starts = part_starts
        self._bufs: dict[int, array[int]] = {}
        self.files: dict[int, str] = {}
        directory.mkdir(parents=True, exist_ok=True)

    def add(self, ordinal: int, part: int, line: int, flag: int) -> None:
        index = bisect.bisect_right(self._starts, ordinal) - 1
        buf = self._bufs.setdefault(index, array("q"))
        buf.extend((ordinal, part, line, flag))
        if len(buf) >= _FLUSH:
            self._flush(index)

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


def read_pointers(path: Path) -> dict[int, tuple[int, int, int]]:
    """ordinal -> (part, line, flag) of the carried records of one part."""
    values = array("q")
    with open(path, "rb") as fh:
        values.frombytes(fh.read())
    return {values[i]: (values[i + 1], values[i + 2], values[i + 3]) for i in range(0, len(values), 4)}


def diff(index: Path, spill: Spill, send: bytearray, pointers: Pointers, retry_errors: bool) -> Diff:
    """Compare partition by partition; ``send[ordinal]`` is cleared for every carried record."""
    result = Diff()
    keep = (OK,) if retry_errors else (OK, PERMANENT)
    for p in range(spill.partitions):
        kept: dict[bytes, list[bytes]] = {}
        for line in partition_lines(index, p):
            digest, flag, part, row, key_json = line.rstrip(b"\n").split(b" ", 4)
            kept[key_json] = [digest, flag, part, row]
        for line in partition_lines(spill.dir, p):
            ordinal, digest, key_json = line.rstrip(b"\n").split(b" ", 2)
            found = kept.pop(key_json, None)
            if found is None:
                result.note("new", key_json)
            elif found[0] != digest:
                result.note("changed", key_json)
            elif found[1] not in keep:
                result.note("retried", key_json)
            else:
                result.note("unchanged", key_json)
                n = int(ordinal)
                send[n] = 0
                pointers.add(n, int(found[2]), int(found[3]), found[1][0])
        result.removed += len(kept)
        for key_json in list(kept)[:_EXAMPLES - len(result.examples.get("removed", []))]:
            result.examples.setdefault("removed", []).append(str(orjson.loads(key_json)))
    return result
