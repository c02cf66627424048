"""Once a generation's jobs are settled: every record's answer, part by part, and the index the next one plans from.

An answer line is ``{"key": k, "response": …, "attempts": n}`` or ``{"key": k, "error": …, "attempts": n}``, line
for line with the part's records (the merge needs nothing else but the records). A carried record's line is
copied from the earlier generation's answers as it is. Each record's request digest and flag go, line for line,
to ``part-N.digests`` (the next generation compares records in place with them), and, with its key and place, to
the index by key: ``KEY <digest: 32 hex><flag><part>:<line>`` (diff.py).

The index is derived: every entry is a part's request line's key and its ``part-N.digests`` line. So a gs://
state does not upload it (it is rewritten whole each generation, in partitions by key, about the input's size
in all); ``ensure_index`` makes it again from the parts where it is missing or was made from other answers.
"""

from __future__ import annotations

import bisect
import hashlib
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

from batchflow.answers import OK, PERMANENT, RETRY, flag_of, request_digest, request_salt
from batchflow.answers.collect import Redo, outcomes, redo_of
from batchflow.answers.diff import read_pointers
from batchflow.answers.partitions import PartitionWriter, partitions_for
from batchflow.libs.gc_tuning import relaxed_gc
from batchflow.libs.jsonio import dumps_kept
from batchflow.logs import Progress
from batchflow.spec.spec import Spec
from batchflow.state.gcs import DERIVED_STAMP
from batchflow.state.shard_files import key_json
from batchflow.state.state import SUCCEEDED, Part, State

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
    """ordinal -> the error of each record never sent (skipped under ``on_bad_record: skip``, or over the model's
    input limit)."""
    if not path.exists():
        return {}
    with open(path, "rb") as fh:  # format 2 wrote {"where","reason","line"}, for records it left out: none here
        items = [item for item in map(orjson.loads, fh) if "ordinal" in item]
    for item in items:  # whether it counts against max_failed is the run's to know, not the row's
        item["error"].pop("counted", None)
    return {item["ordinal"]: item["error"] for item in items}


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
            fresh = _fresh_answers(root, state, part.units, redo_of(spec))
            fallback = _unanswered(state, part.units)
            with open(tmp / answer_file(part.index), "wb") as out, open(root / part.requests, "rb") as lines, \
                    open(tmp / digest_file(part.index), "wb") as digests:
                write, note = out.write, digests.write
                for row, line in enumerate(lines):
                    ordinal = part.first + row
                    kj = key_json(line)
                    if rejects and ordinal in rejects:
                        write(dumps({"key": loads(kj), "error": rejects[ordinal], "attempts": 0}, option=_NL))
                        note(_NO_DIGEST)
                        continue
                    pointer = carried.get(ordinal) if carried else None
                    if marks and marks[ordinal] in in_place:  # the earlier record at the same ordinal
                        old = bisect.bisect_right(firsts, ordinal) - 1
                        pointer = (old, ordinal - firsts[old], marks[ordinal])
                    if pointer is not None and earlier is not None:
                        write(earlier.get(pointer[0], pointer[1]))
                        flag = bytes((pointer[2],))
                    else:
                        answer = fresh.get(kj)
                        if answer is None:
                            write(dumps({"key": loads(kj), **fallback}, option=_NL))
                            flag = RETRY
                        else:
                            write(answer[0])
                            flag = answer[1]
                    counts[flag] += 1
                    request = digest(salt, line) + flag
                    note(request)
                    add(kj, b"%s %s%d:%d\n" % (kj, request, part.index, row))
            del fresh, carried  # before the next part's are read: two parts' at once would be the peak
    index.flush()
    (tmp / "index" / _STAMP).write_text(index_stamp(tmp, state.parts), encoding="utf-8")
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    rel = str(final.relative_to(base))
    return {"dir": rel, "index": f"{rel}/index", "partitions": partitions, "gen": state.gen, "digests": True,
            "ok": counts[OK], "kept_errors": counts[PERMANENT], "retry": counts[RETRY]}


_STAMP = DERIVED_STAMP  # in the index: the stamp of the answers it was made from (a gs:// state then skips it)


def index_stamp(directory: Path, parts: Sequence[Part]) -> str:
    """What an index is made from, in a few bytes: each part's request file's name and its digests' bytes (a
    record's digest and flag change with its answer; its key, with its request file)."""
    stamp = hashlib.blake2b(digest_size=16)
    for part in parts:
        stamp.update(b"%s\n" % part.requests.encode())
        with open(directory / digest_file(part.index), "rb") as fh:
            stamp.update(fh.read())
    return stamp.hexdigest()


def ensure_index(root: Path, answers: dict[str, Any], parts: Sequence[Part]) -> Path:
    """The index of kept ``answers`` by key, made again from the parts when it is missing or is not theirs (a
    cache filled from a gs:// state, which does not carry it); made whole beside, then moved into place."""
    directory, index = root / str(answers["dir"]), root / str(answers["index"])
    if not answers.get("digests") or not parts:
        return index  # answers of a state before digests were kept: their index is all there is
    stamp = index_stamp(directory, parts)
    try:
        if (index / _STAMP).read_text(encoding="utf-8") == stamp:
            return index
    except OSError:
        pass
    tmp = index.with_name(f"{index.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    writer = PartitionWriter(tmp, int(answers["partitions"]))
    add = writer.add
    for part in parts:
        with open(root / part.requests, "rb") as lines, open(directory / digest_file(part.index), "rb") as digests:
            for row, line in enumerate(lines):
                request = digests.read(33)
                if request != _NO_DIGEST:
                    kj = key_json(line)
                    add(kj, b"%s %s%d:%d\n" % (kj, request, part.index, row))
    writer.flush()
    (tmp / _STAMP).write_text(stamp, encoding="utf-8")
    shutil.rmtree(index, ignore_errors=True)
    tmp.rename(index)
    return index


def _fresh_answers(root: Path, state: State, units: list[int],
                   redo: Redo | None = None) -> dict[bytes, tuple[bytes, bytes]]:
    """The answer line and flag of each record the units sent and got a result for, by the key's JSON.

    A unit whose one job succeeded (the usual case) has one result line per key, ``{"key": K, "response"|"error":
    …}``: its answer is that line with ``"attempts": 1``, spliced, not parsed and written again (a response is
    most of a merge's bytes). Otherwise each key's outcome over the unit's jobs decides (``collect.outcomes``)."""
    found: dict[bytes, tuple[bytes, bytes]] = {}
    for index in units:
        unit = state.shards[index]
        job = unit.jobs[0]
        if len(unit.jobs) == 1 and job.ended == SUCCEEDED and job.results:
            with open(root / job.results, "rb") as fh:
                for line in fh:
                    end = _key_end(line)
                    if line.startswith(b'{"key":"') and end > 0 and line.endswith(b"}\n"):
                        response = line.startswith(b'"response":', end + 1) and b'"candidates":[{' in line
                        flag = OK if response else flag_of(orjson.loads(line))
                        found[line[_KEY_START:end]] = (line[:-2] + b',"attempts":1}\n', flag)
                    else:
                        item = orjson.loads(line)
                        quoted = dumps_kept(item.pop("key"))
                        found[quoted] = (b'{"key":%s,%s' % (quoted, orjson.dumps({**item, "attempts": 1},
                                                                                 option=_NL)[1:]), flag_of(item))
            continue
        for key, outcome in outcomes(root, unit, redo).items():
            kj = dumps_kept(key)
            answer = orjson.dumps({**outcome.result, "attempts": outcome.sent}, option=_NL)
            found[kj] = (b'{"key":%s,%s' % (kj, answer[1:]), flag_of(outcome.result))
    return found


_KEY_START = len(b'{"key":')


def _key_end(line: bytes) -> int:
    """Where the key of a result line (``{"key": K, "response"|"error": …}``) ends: a JSON string holds no bare
    quote, so ``,"response":`` / ``,"error":`` cannot occur inside K (``,"`` alone can: a key ending in a comma)."""
    end = line.find(b',"response":', _KEY_START)
    return end if end > 0 else line.find(b',"error":', _KEY_START)


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
