"""The generation before: its kept answers, and its records in input order to recognise one unchanged in place."""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchflow.answers.keep import digest_file, ensure_index
from batchflow.state.state import Part


@dataclass(frozen=True)
class Earlier:
    """The answers the generation before kept (``State.answers``), the state dir they are in, and that
    generation's parts and spec fingerprint (to recognise a record unchanged at its place without rendering it)."""

    answers: dict[str, Any]
    root: Path
    parts: tuple[Part, ...] = ()
    fingerprint: str = ""

    @property
    def index(self) -> Path:
        """The kept answers by key; made again from the parts when the cache lacks it (a gs:// state)."""
        return ensure_index(self.root, self.answers, self.parts)

    def in_place(self, fingerprint: str) -> InPlace | None:
        """The earlier records in input order, when the requests are made as they were then (the spec fingerprint
        ``fingerprint`` is the earlier one) and the answers carry their digests."""
        if not self.parts or self.fingerprint != fingerprint or not self.answers.get("digests"):
            return None
        return InPlace(self)


class _File:
    """One file of a part at a time, in a buffer reused from part to part, with where each of its lines starts
    (and one past the end): line i is ``data[starts[i]:starts[i + 1]]``."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.data = memoryview(self.buffer)
        self.starts = array("q")

    def read(self, path: Path) -> None:
        size = path.stat().st_size
        if size > len(self.buffer):
            self.data.release()
            self.buffer = bytearray(size + size // 4)
        self.data = memoryview(self.buffer)[:size]
        with open(path, "rb") as fh:
            fh.readinto(self.data)
        del self.starts[:]
        self.starts.append(0)
        find, at, text = self.buffer.find, 0, self.buffer
        while (at := find(b"\n", at, size) + 1) > 0:
            self.starts.append(at)
        if self.starts[-1] != size:
            self.starts.append(size)
        del text


class InPlace:
    """The earlier generation's records, one part at a time in input order: the hot loop loads the part that holds
    an ordinal and compares the record at that place with the new one by its bytes.

    A part is held in buffers reused from part to part, with arrays of line offsets: not a list of lines per part
    (millions of short objects made and freed among the hot loop's own), nor a new bytes object of a part's size
    per part (each above the allocator's mmap threshold, which then rises and leaves them in a heap that only
    grows): both were measured at 100-180 MB of peak RSS, growing with the input."""

    def __init__(self, earlier: Earlier) -> None:
        self._earlier = earlier
        self._parts = iter(earlier.parts)
        self.first = self.end = 1  # the ordinals of the loaded part: [first, end)
        self._records, self._lines, self._digests = _File(), _File(), _File()

    def load(self, ordinal: int) -> bool:
        """Load the part holding ``ordinal``; False when the earlier generation had no such record."""
        root, answers = self._earlier.root, self._earlier.root / str(self._earlier.answers["dir"])
        while ordinal >= self.end:
            part = next(self._parts, None)
            if part is None:
                return False
            self._records.read(root / part.manifest)
            self._lines.read(root / part.requests)
            self._digests.read(answers / digest_file(part.index))
            self.first, self.end = part.first, part.first + part.count
        return self.first <= ordinal

    def part_data(self) -> tuple[int, int, bytearray, array[int], memoryview, array[int], bytearray]:
        """``(first, end, records, record starts, request lines, line starts, digests)`` of the loaded part (the
        buffers are longer than the part: only the offsets say where it ends)."""
        return (self.first, self.end, self._records.buffer, self._records.starts, self._lines.data,
                self._lines.starts, self._digests.buffer)
