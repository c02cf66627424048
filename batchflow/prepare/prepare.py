"""Read -> render -> key -> parts, then the difference from the kept answers -> the units to send.

All local work, done whole before anything is submitted: a bad record stops it with nothing spent and the state
as it was. A generation's files are written under ``gen-N.tmp`` and moved to ``gen-N`` only once whole.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import shutil
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

from batchflow import logs
from batchflow.answers import OK, PERMANENT, request_digest, request_salt
from batchflow.answers.diff import REJECTED, SEND, Diff, KeyMetTwice, Pointers, Spill, diff
from batchflow.answers.earlier import Earlier
from batchflow.errors import DataError
from batchflow.libs.gc_tuning import relaxed_gc
from batchflow.logs import Progress
from batchflow.prepare.duplicates import KeyHashes, first_duplicate
from batchflow.prepare.media_tally import check_unit_media, tally, unit_media_tokens
from batchflow.prepare.staging import Stager
from batchflow.request.media import FileStats, may_have_media
from batchflow.request.render import Renderer
from batchflow.sources.base import Source, SourceRecord, where
from batchflow.sources.files import parse_line
from batchflow.sources.registry import open_source
from batchflow.spec import models
from batchflow.spec.limits import spec_job_size
from batchflow.spec.spec import Spec
from batchflow.state.shard_files import ShardInfo, ShardWriter, Written, shard_names, too_large
from batchflow.state.state import Job, Part, Shard, State

log = logs.get_logger(__name__)

_NL = orjson.OPT_APPEND_NEWLINE
# The parts of a spec that decide the request lines; the rest (output, retry, polling) may change freely.
REQUEST_KEYS = ("model", "task", "source", "key", "prompt", "system", "generation_config", "request",
                "content", "embed_config")


@dataclass(frozen=True)
class Rendered:
    record: SourceRecord
    key: str
    request: dict[str, Any]


def request_fields(spec: Spec) -> dict[str, Any]:
    """The spec fields that decide the request lines, as JSON values (to name which changed)."""
    parts: dict[str, Any] = {k: spec.raw.get(k) for k in REQUEST_KEYS}
    parts["jobs"] = {k: (spec.raw.get("jobs") or {}).get(k) for k in ("max_requests", "max_bytes")}
    parts["backend"] = spec.backend.type
    normal: dict[str, Any] = json.loads(json.dumps(parts, sort_keys=True, default=str))
    return normal


FILE_LIST = "media-files"  # in a generation's directory: the local files its requests read (FileStats)


def fingerprint(spec: Spec, source_fingerprint: str = "") -> str:
    """Identity of the request lines a spec makes (from its input as it is now, when that is given)."""
    parts = request_fields(spec)
    if source_fingerprint:
        parts["input"] = source_fingerprint
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.blake2b(blob, digest_size=12).hexdigest()


def check_not_empty(spec: Spec) -> None:
    """An input with no records stops validate, plan and run (exit 2) unless the spec allows it: an export that
    came out empty by mistake must not replace a good output with nothing."""
    if not spec.source.allow_empty:
        raise DataError(f"{spec.where('source')}: source: no records to run (set source.allow_empty: true if an "
                        "empty input is expected)")


def rendered(spec: Spec, rejects: IO[bytes] | None = None) -> Iterator[Rendered]:
    """Every record of the source with its key and request; a duplicate key is an error naming both.

    For ``validate``; ``prepare`` has its own loop, faster and flat in memory."""
    renderer = Renderer(spec)
    seen: dict[str, int] = {}
    for rec in open_source(spec.source, _rejecter(rejects) if rejects else None).records():
        key, request = renderer.render(rec.record, rec.ordinal, rec.where)
        first = seen.setdefault(key, rec.ordinal)
        if first != rec.ordinal:
            raise DataError(_duplicate(rec.where, rec.ordinal, key, first, spec))
        yield Rendered(rec, key, request)


class _Compare:
    """What the hot loop needs to compare the records with an earlier generation, and what it finds."""

    def __init__(self, spec: Spec, tmp: Path, earlier: Earlier | None, retry_errors: bool) -> None:
        self.spill = Spill(tmp / "spill", earlier.answers["partitions"]) if earlier else None
        self.pointers = Pointers(tmp / "carried", [])
        # a record the same as before makes the same request, unless the request reads files (media): then the
        # record is rendered again, its files' content in the request line and its digest
        self.in_place = earlier.in_place(fingerprint(spec)) if earlier and not may_have_media(spec) else None
        self.keep = {OK[0]} if retry_errors else {OK[0], PERMANENT[0]}
        self.send = bytearray(REJECTED)  # each record's mark, by ordinal (diff.py: SEND, CARRIED, ...)
        self.carried_in_place = 0  # records found unchanged at their place


def prepare(spec: Spec, root: Path, gen: int, earlier: Earlier | None, retry_errors: bool = False,
            stager: Stager | None = None) -> State:
    """Generation ``gen`` of the spec, its files in ``root/gen-N``; the caller saves the state it returns.

    With a ``stager``, each unit is staged as soon as its file is whole, beside the rest of the work; the units
    come back staged. Nothing is created here: a failure deletes what was staged."""
    final, tmp = root / f"gen-{gen}", root / f"gen-{gen}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "shards").mkdir(parents=True)
    try:
        state = _prepare(spec, root, tmp, final.name, gen, earlier, retry_errors, stager)
        if stager is not None:
            staged = stager.take([shard.jobs[0] for shard in state.shards])
            log.info("staged while preparing", jobs=staged, of=len(state.shards))
    except BaseException as exc:
        if stager is not None:
            stager.discard(wait_for_uploads=not isinstance(exc, KeyboardInterrupt))
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    log.info("prepared", gen=gen, records=state.records, parts=len(state.parts), jobs=len(state.shards),
             **{k: v for k, v in state.diff.items() if k != "examples" and v})
    return state


def _prepare(spec: Spec, root: Path, tmp: Path, name: str, gen: int, earlier: Earlier | None,
             retry_errors: bool, stager: Stager | None) -> State:
    size = spec_job_size(spec)
    # the input's stat before it is read: a file that changes while it is read then differs from it next time,
    # and is read again, rather than taken for the content read here
    stat = open_source(spec.source).fingerprint()
    compare = _Compare(spec, tmp, earlier, retry_errors)
    rejects: list[tuple[int, dict[str, Any]]] = []
    # the first generation's parts are its units (unless records were rejected): staged as they are written
    upload = _upload_when_written(stager if earlier is None else None, tmp / "shards", spec, gen)
    with ShardWriter(tmp / "shards", size, on_written=upload) as writer:
        source, records, files = _write_parts(spec, writer, tmp, compare, rejects)
    if not records:
        check_not_empty(spec)
    parts: list[Part] = []
    starts: list[int] = []
    for info in writer.shards:
        first = starts[-1] + parts[-1].count if parts else 1
        parts.append(Part(info.index, first, info.count, f"{name}/shards/{info.requests}",
                          f"{name}/shards/{info.manifest}"))
        starts.append(first)
    send, spill, pointers = compare.send, compare.spill, compare.pointers
    over_limit = sum(error.get("counted", False) for _, error in rejects)
    changes = Diff(new=records - len(rejects), rejected=len(rejects), over_limit=over_limit)
    if earlier is not None and spill is not None:
        spill.close()
        pointers.starts = starts
        try:
            changes = diff(earlier.index, spill, send, pointers, retry_errors, compare.carried_in_place,
                           [p.first for p in earlier.parts])
        except KeyMetTwice as exc:
            _name_duplicate(spec, [tmp / "shards" / s.requests for s in writer.shards], {hash(exc.key)})
            raise DataError(f"record {exc.ordinal}: duplicate key {exc.key!r}; keys must be unique "
                            f"({spec.where('key')})") from None
        changes.rejected, changes.over_limit = len(rejects), over_limit
        shutil.rmtree(spill.dir, ignore_errors=True)
    for index, file in pointers.close().items():
        parts[index].carried = f"{name}/carried/{file}"
    (tmp / "marks").write_bytes(send)
    if rejects:
        with open(tmp / "rejects.jsonl", "wb") as fh:
            for ordinal, error in rejects:
                fh.write(orjson.dumps({"ordinal": ordinal, "error": error}, option=_NL))
    if earlier is None and not rejects:
        units = [_unit(spec, gen, info, f"{name}/shards/{info.requests}", f"{name}/shards/{info.manifest}",
                       unit_media_tokens(spec, tmp / "shards" / info.requests, info.index))
                 for info in writer.shards]
        for part in parts:
            part.units = [part.index]
    else:
        units = _pack(spec, gen, tmp, name, parts, send, stager)
    return State(spec.name, fingerprint(spec), records=records, shards=units, gen=gen, parts=parts,
                 source={"stat": stat, "content": source.content_digest(), **({"files": files} if files else {})},
                 spec=request_fields(spec),
                 previous={**earlier.answers, "firsts": [p.first for p in earlier.parts]} if earlier else None,
                 diff=changes.as_dict())


def _pack(spec: Spec, gen: int, tmp: Path, name: str, parts: list[Part], send: bytearray,
          stager: Stager | None) -> list[Shard]:
    """The records to send, copied from the parts into units cut by count and bytes (a part's records go in one
    unit, or in two that follow each other)."""
    (tmp / "units").mkdir()
    upload = _upload_when_written(stager, tmp / "units", spec, gen)
    with ShardWriter(tmp / "units", spec_job_size(spec), manifests=False, on_written=upload) as writer:
        for part in parts:
            if send.find(SEND, part.first, part.first + part.count) < 0:
                continue
            start = len(writer.shards)
            with open(tmp.parent / part.requests.replace(name, tmp.name, 1), "rb") as fh:
                for ordinal, line in enumerate(fh, start=part.first):
                    if send[ordinal] == SEND[0]:
                        writer.append(line, b"")
            part.units = list(range(start, len(writer.shards) + 1))
        writer.close()
    return [_unit(spec, gen, info, f"{name}/units/{info.requests}",
                  media=unit_media_tokens(spec, tmp / "units" / info.requests, info.index))
            for info in writer.shards]


def _upload_when_written(stager: Stager | None, directory: Path, spec: Spec, gen: int) -> Written | None:
    """What the shard-writing thread calls as each unit's file is whole: its first job's input staged."""
    if stager is None:
        return None

    def upload(index: int, digest: str) -> None:
        path = directory / shard_names(index)[0]
        if may_have_media(spec):  # a unit that could never be staged: refused before anything of it is uploaded
            check_unit_media(spec, tally(path), index)
        stager.stage(path, display_name(spec.name, gen, index, 1, digest), digest)

    return upload


def _unit(spec: Spec, gen: int, info: ShardInfo, requests: str, manifest: str = "", media: int = 0) -> Shard:
    tokens = info.bytes // models.CHARS_PER_TOKEN + media  # media: its media parts' prompt tokens
    first = Job(n=1, input=requests, count=info.count, digest=info.digest, tokens=tokens,
                display_name=display_name(spec.name, gen, info.index, 1, info.digest))
    return Shard(info.index, info.count, info.bytes, info.digest, requests, manifest, jobs=[first])


class _Counter:
    """The ordinal of the next record, shared by the hot loop and the handler of bad records."""

    def __init__(self) -> None:
        self.next = itertools.count(1).__next__


def _write_parts(spec: Spec, writer: ShardWriter, tmp: Path, compare: _Compare,
                 rejects: list[tuple[int, dict[str, Any]]]) -> tuple[Source, int, str | None]:
    """The records rendered into the writer's parts; the source, the record count and, for a spec whose requests
    read local files, the digest of those files' stats (``FileStats``, listed in ``FILE_LIST``) or None."""
    keys = KeyHashes(tmp / "keys.tmp")
    counter = _Counter()
    renderer = Renderer(spec)
    if may_have_media(spec):
        renderer.file_stats = FileStats(tmp / FILE_LIST)

    def reject(place: str, reason: str, ordinal: int | None = None, key: str | None = None,
               record_json: bytes = b"null", counted: bool = False) -> None:
        """An error row for a record never sent. ``counted`` (a record the model would refuse) counts against
        ``max_failed``, with its record kept; a bad record skipped under ``on_bad_record: skip`` does not."""
        ordinal = counter.next() if ordinal is None else ordinal
        key = str(ordinal) if key is None else key
        writer.append(orjson.dumps({"key": key, "request": None}, option=_NL), record_json)
        compare.send += REJECTED
        keys.add(hash(key))
        error: dict[str, Any] = {"code": None, "message": f"{place}: {reason}"}
        rejects.append((ordinal, error | {"counted": True} if counted else error))
        log.warning("record not sent: it gets an error row", where=place, reason=reason, key=key)

    source = open_source(spec.source, lambda place, reason, _raw: reject(place, reason))
    try:
        with relaxed_gc():
            records = _render_all(spec, renderer, writer, keys, source, compare, counter,
                                  reject if spec.source.on_bad_record == "skip" else None, reject)
    finally:
        files = renderer.file_stats.close() if renderer.file_stats is not None else None
    writer.close()
    suspects = keys.repeated()
    if suspects:
        _name_duplicate(spec, [writer.dir / s.requests for s in writer.shards] if writer.dir else [], suspects)
    return source, records, files


_Reject = Callable[..., None]


def _render_all(spec: Spec, renderer: Renderer, writer: ShardWriter, keys: KeyHashes, source: Source,
                compare: _Compare, counter: _Counter, skip: _Reject | None, refuse: _Reject) -> int:
    """The hot loop: once per record, so what can be hoisted out of it is (bound methods, limits, options).

    One process: rendering in worker processes (runs of ~1 MiB of lines, in order) was measured slower on two
    cores, 4.8-6.8 s against 3.6-4.0 s for 1M records: the ~1 GB of lines and shard bytes through pipes costs
    more than it saves. The second core hashes and writes the shards (``ShardWriter``).

    With kept answers to compare with, a JSON Lines record whose bytes are those of the earlier generation's record
    at the same place (same spec fields) makes the same request: its earlier request line and answer are taken as
    they are, with no rendering and no digest (``lockstep``; a grown export is mostly that). Every other record's
    key, digest and ordinal go to the spill, compared with the kept index after the loop (``diff``)."""
    render, fast = renderer.render, renderer.fast or _no_fast_path
    dumps, append, add_hash, next_ordinal = orjson.dumps, writer.append, keys.add, counter.next
    max_bytes, ordinal = writer.size.max_bytes, 0
    max_prompt = models.prompt_bytes(spec.model, spec.backend.type, spec.task,
                                    (spec.embed_config or {}).get("auto_truncate"))
    salt, digest, spill = request_salt(spec), request_digest, compare.spill
    add_spill, mark, keep = spill.add if spill else None, compare.send.append, compare.keep
    earlier = compare.in_place
    first = end = 0  # the ordinals [first, end) of the earlier part loaded
    ends = records = array("q")  # where each earlier record (request line) starts in ``text`` (``lines``)
    text = digests = bytearray()
    lines = memoryview(text)
    in_place = 0
    progress = Progress("preparing")
    for record, raw, place, line in source.items(unparsed=earlier is not None):
        ordinal = next_ordinal()
        if earlier is not None:
            if ordinal >= end:
                if earlier.load(ordinal):
                    first, end, text, records, lines, ends, digests = earlier.part_data()
                else:
                    earlier = None  # the earlier generation ends before this record: the rest are new
            row = ordinal - first
            # the earlier record at this place, compared in place (no copy): same length, same bytes
            if (earlier is not None and raw is not None and records[row + 1] - records[row] - 1 == len(raw)
                    and text.startswith(raw, records[row]) and digests[33 * row + 32] in keep):
                # its request line, as it was; its key is not hashed: the earlier generation's keys were unique,
                # and a new record with one of them is found by the diff (a key carried in place, met again)
                append(lines[ends[row]:ends[row + 1]].tobytes(), raw)
                mark(digests[33 * row + 32])  # carried in place: its answer is the earlier one at this ordinal
                in_place += 1
                continue
        if record is None:  # an unparsed line (see above), not the same as the earlier one: parse it now
            record, reason = parse_line(raw)
            if record is None:
                if skip is None:
                    raise DataError(f"{where(place, line)}: {reason}")
                skip(where(place, line), reason, ordinal, None)
                continue
        try:
            key, request = fast(record, ordinal)
        except Exception:  # what the fast path cannot render, render does (or says why it cannot)
            try:
                key, request = render(record, ordinal, SourceRecord(ordinal, place, record, line, raw))
            except DataError as exc:
                if skip is None:
                    raise
                skip(where(place, line), str(exc).split(": ", 1)[-1], ordinal, renderer.key_of(record, ordinal))
                continue
        try:
            request_line = dumps({"key": key, "request": request}, option=_NL)
            record_json = raw if raw is not None else dumps(record)  # a JSON Lines record's own text, as it is
        except TypeError as exc:
            render(record, ordinal, where(place, line))  # a record with a field name that is not a string: its error
            raise DataError(f"{where(place, line)}: record {ordinal} (key {key!r}): "
                            f"the request is not JSON: {exc}") from exc
        if len(request_line) > max_prompt:  # never sent: an error row (the model would refuse it)
            refuse(where(place, line), models.too_long(spec.model, len(request_line)), ordinal, key, record_json,
                   counted=True)
            continue
        if len(request_line) > max_bytes:
            raise too_large(where(place, line), len(request_line), max_bytes)
        append(request_line, record_json)
        add_hash(hash(key))
        mark(SEND[0])
        if add_spill is not None:  # the key's JSON as the line holds it (orjson), its digest, its ordinal
            kj = dumps(key)
            add_spill(kj, b"%s %s%d\n" % (kj, digest(salt, request_line), ordinal))
        if not ordinal & 0xFFF:
            keys.spill_if_full()
            progress.tick(records=ordinal, shards=len(writer.shards) + 1)
    compare.carried_in_place = in_place
    return next_ordinal() - 1


def _no_fast_path(record: dict[str, Any], ordinal: int) -> tuple[str, dict[str, Any]]:
    raise NotImplementedError


def _name_duplicate(spec: Spec, requests: list[Path], suspects: set[int]) -> None:
    """Raise the duplicate-key error naming both records (a rare, slow path: it reads the input again)."""
    found = first_duplicate(iter(requests), suspects)
    if found is None:
        return  # different keys whose hashes met: no duplicate
    key, first, repeat = found
    where = next((r.where for r in open_source(spec.source).records() if r.ordinal == repeat), f"record {repeat}")
    raise DataError(_duplicate(where, repeat, key, first, spec))


def _duplicate(where: str, ordinal: int, key: str, first: int, spec: Spec) -> str:
    return (f"{where}: record {ordinal}: duplicate key {key!r} (record {first} has it too); "
            f"keys must be unique ({spec.where('key')})")


def display_name(spec_name: str, gen: int, unit: int, n: int, digest: str) -> str:
    """The job's deterministic name: the same generation, unit, attempt and content always give the same one."""
    return f"{generation_prefix(spec_name, gen)}s{unit:05d}-j{n}-{digest[:8]}"


def generation_prefix(spec_name: str, gen: int) -> str:
    """What the display names of one generation's jobs begin with."""
    return f"batchflow-{spec_name[:56]}-g{gen}-"


_DISPLAY_TAIL = re.compile(r"g(\d+)-s\d{5}-j\d+-[0-9a-f]{8}")


def display_name_generation(spec_name: str, name: str) -> int | None:
    """The generation of a job's display name when it is one of this spec's (``display_name`` made it), else
    None: a name another spec's jobs carry (``a`` beside ``a-b``) never reads as this one's."""
    head = f"batchflow-{spec_name[:56]}-"
    found = _DISPLAY_TAIL.fullmatch(name[len(head):]) if name.startswith(head) else None
    return int(found.group(1)) if found else None


def _rejecter(out: IO[bytes]) -> Any:
    def reject(where: str, reason: str, line: bytes) -> None:
        out.write(orjson.dumps({"where": where, "reason": reason,
                                "line": line.decode("utf-8", "replace")}, option=_NL))
        log.warning("record skipped", where=where, reason=reason)

    return reject
