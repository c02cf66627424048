"""Once a generation's jobs are settled: every record's answer, part by part, and the index the next one plans from.

An answer line is ``{"response": …, "attempts": n}`` or ``{"error": …, "attempts": n}``, line for line with the
part's records. A carried record's line is copied from the earlier generation's answers as it is. The index line
of each record (every one but a bad record skipped) is ``KEY <digest: 32 hex><flag><part>:<line>`` (diff.py).
"""

from __future__ import annotations

import bisect
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from batchflow.answers import OK, PERMANENT, RETRY, flag_of, request_digest, request_salt
from batchflow.answers.diff import read_pointers
from batchflow.answers.partitions import PartitionWriter, partitions_for
from batchflow.collect import Outcome, outcomes
from batchflow.hotloop import relaxed_gc
from batchflow.logs import Progress
from batchflow.sharding import key_json
from batchflow.spec import Spec
from batchflow.state import State

_NL = orjson.OPT_APPEND_NEWLINE
_CACHED_PARTS = 2  # earlier parts held in memory while copying carried answers (input order mostly follows)


class AnswerReader:
    """The answer lines of a kept generation, fetched by (part, line)."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self._parts: dict[int, list[bytes]] = {}

    def get(self, part: int, line: int) -> bytes:
        lines = self._parts.get(part)
        if lines is None:
            if len(self._parts) >= _CACHED_PARTS:
                del self._parts[next(iter(self._parts))]
            with open(self.dir / answer_file(part), "rb") as fh:
                lines = self._parts[part] = fh.readlines()
        return lines[line]


def answer_file(part: int) -> str:
    return f"part-{part:05d}.jsonl"


def digest_file(part: int) -> str:
    """Each record's request digest and flag (33 bytes), line for line: the next generation reads them in order."""
    return f"part-{part:05d}.digests"


_NO_DIGEST = b"-" * 33  # a bad record's: it matches nothing


def read_rejects(path: Path) -> dict[int, dict[str, Any]]:
    """ordinal -> the error of each bad record skipped under ``on_bad_record: skip``."""
    if not path.exists():
        return {}
    with open(path, "rb") as fh:
        return {item["ordinal"]: item["error"] for item in map(orjson.loads, fh)}


def keep(spec: Spec, state: State, root: Path, out_root: Path | None = None) -> dict[str, Any]:
    """Write the generation's answers and index (into place only when whole); returns what the state records.

    ``out_root`` puts them in another directory (``plan`` does, to read nothing it has not written itself)."""
    base = out_root or root
    gen_dir = base / state.gen_dir
    final, tmp = gen_dir / "answers", gen_dir / "answers.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    partitions = partitions_for(state.records)
    index = PartitionWriter(tmp / "index", partitions)
    earlier = AnswerReader(root / state.previous["dir"]) if state.previous else None
    rejects = read_rejects(root / state.gen_dir / "rejects.jsonl")
    marks_file = root / state.gen_dir / "marks"
    marks = marks_file.read_bytes() if marks_file.exists() else b""
    firsts = list((state.previous or {}).get("firsts", []))
    in_place = (OK[0], PERMANENT[0])
    salt = request_salt(spec)
    counts = {OK: 0, PERMANENT: 0, RETRY: 0}
    progress = Progress("keeping answers")
    dumps, loads, digest = orjson.dumps, orjson.loads, request_digest
    add = index.add
    with relaxed_gc():
        for part in state.parts:
            progress.tick(part=part.index, parts=len(state.parts))
            carried = read_pointers(root / part.carried) if part.carried else {}
            fresh: dict[str, Outcome] = {}
            for unit in part.units:
                fresh.update(outcomes(root, state.shards[unit]))
            fallback = _unanswered(state, part.units)
            with open(tmp / answer_file(part.index), "wb") as out, open(root / part.requests, "rb") as lines, \
                    open(tmp / digest_file(part.index), "wb") as digests:
                write, note = out.write, digests.write
                for row, line in enumerate(lines):
                    ordinal = part.first + row
                    if rejects and ordinal in rejects:
                        write(dumps({"error": rejects[ordinal], "attempts": 0}, option=_NL))
                        note(_NO_DIGEST)
                        continue
                    kj = key_json(line)
                    pointer = carried.get(ordinal) if carried else None
                    if marks and marks[ordinal] in in_place:  # the earlier record at the same ordinal
                        old = bisect.bisect_right(firsts, ordinal) - 1
                        pointer = (old, ordinal - firsts[old], marks[ordinal])
                    if pointer is not None and earlier is not None:
                        write(earlier.get(pointer[0], pointer[1]))
                        flag = bytes((pointer[2],))
                    else:
                        outcome = fresh.get(loads(kj))
                        if outcome is None:
                            write(dumps(fallback, option=_NL))
                            flag = RETRY
                        else:
                            write(dumps({**outcome.result, "attempts": outcome.sent}, option=_NL))
                            flag = flag_of(outcome.result)
                    counts[flag] += 1
                    request = digest(salt, line) + flag
                    note(request)
                    add(kj, b"%s %s%d:%d\n" % (kj, request, part.index, row))
    index.flush()
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    rel = str(final.relative_to(base))
    return {"dir": rel, "index": f"{rel}/index", "partitions": partitions, "gen": state.gen, "digests": True,
            "ok": counts[OK], "kept_errors": counts[PERMANENT], "retry": counts[RETRY]}


def _unanswered(state: State, units: list[int]) -> dict[str, Any]:
    """The answer of a sent record that got no result: its unit's last job's fate."""
    job = state.shards[units[-1]].current if units else None
    name, status = (job.name, job.ended or job.status) if job else (None, "not sent")
    message = f"job {name} ended {status}" + (f": {job.error}" if job and job.error else "")
    return {"error": {"code": None, "message": message}, "attempts": 0}


def answer_lines(root: Path, state: State) -> Iterator[tuple[int, Iterator[bytes]]]:
    """Each part's index and its answer lines, in input order."""
    assert state.answers is not None
    directory = root / state.answers["dir"]
    for part in state.parts:
        with open(directory / answer_file(part.index), "rb") as fh:
            yield part.index, iter(fh)
