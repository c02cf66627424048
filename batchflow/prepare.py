"""Read -> render -> key -> shard files: all local work, done whole before anything is submitted."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson
import structlog

from batchflow.errors import DataError
from batchflow.hotloop import relaxed_gc
from batchflow.keys import KeyHashes, first_duplicate
from batchflow.limits import spec_job_size
from batchflow.logs import Progress
from batchflow.sharding import ShardInfo, ShardWriter, too_large
from batchflow.sources import Source, SourceRecord, open_source, where
from batchflow.spec import Spec
from batchflow.state import Job, Shard, State, StateStore
from batchflow.templating import Renderer

log = structlog.get_logger(__name__)

_NL = orjson.OPT_APPEND_NEWLINE
# The parts of a spec that decide the request lines; the rest (output, retry, polling) may change freely.
_REQUEST_KEYS = ("model", "task", "source", "key", "prompt", "system", "generation_config", "request",
                 "content", "embed_config")


@dataclass(frozen=True)
class Rendered:
    record: SourceRecord
    key: str
    request: dict[str, Any]


def fingerprint(spec: Spec, source_fingerprint: str) -> str:
    """Identity of the request lines a spec makes from its input as the input is now."""
    parts = {k: spec.raw.get(k) for k in _REQUEST_KEYS}
    parts["jobs"] = {k: (spec.raw.get("jobs") or {}).get(k) for k in ("max_requests", "max_bytes")}
    parts["backend"] = spec.backend.type
    parts["input"] = source_fingerprint
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.blake2b(blob, digest_size=12).hexdigest()


def rendered(spec: Spec, rejects: IO[bytes] | None = None) -> Iterator[Rendered]:
    """Every record of the source with its key and request; a duplicate key is an error naming both.

    For ``validate`` and ``plan``; ``prepare`` has its own loop, faster and flat in memory."""
    renderer = Renderer(spec)
    seen: dict[str, int] = {}
    for rec in open_source(spec.source, _rejecter(rejects) if rejects else None).records():
        key, request = renderer.render(rec.record, rec.ordinal, rec.where)
        first = seen.setdefault(key, rec.ordinal)
        if first != rec.ordinal:
            raise DataError(_duplicate(rec.where, rec.ordinal, key, first, spec))
        yield Rendered(rec, key, request)


def prepare(spec: Spec, store: StateStore, planned_from: str) -> State:
    """Write every shard, then the state (recording ``planned_from``, the spec and input fingerprint): a bad
    record stops this with nothing submitted and no state saved."""
    tmp = store.dir / "shards.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    size = spec_job_size(spec)
    try:
        with ShardWriter(tmp, size) as writer:
            records = _write_shards(spec, writer, store.dir / "rejects.jsonl")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shards = writer.shards
    if not shards:
        raise DataError(f"{spec.where('source')}: source: no records to run")
    final = store.dir / "shards"
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    state = State(spec.name, planned_from, records=records,
                  shards=[_shard(spec, info) for info in shards])
    store.save(state)
    log.info("prepared", records=records, shards=len(shards))
    return state


def _write_shards(spec: Spec, writer: ShardWriter, rejects_path: Path) -> int:
    keys = KeyHashes((writer.dir or rejects_path.parent) / "keys.tmp")  # inside shards.tmp: gone with it on error
    try:
        with open(rejects_path, "wb") as rejects, relaxed_gc():
            records = _render_all(spec, writer, keys, open_source(spec.source, _rejecter(rejects)))
    finally:
        if rejects_path.stat().st_size == 0:
            rejects_path.unlink()
    writer.close()
    suspects = keys.repeated()
    if suspects:
        _name_duplicate(spec, [writer.dir / s.requests for s in writer.shards] if writer.dir else [], suspects)
    return records


def _render_all(spec: Spec, writer: ShardWriter, keys: KeyHashes, source: Source) -> int:
    """The hot loop: once per record, so what can be hoisted out of it is (bound methods, limits, options).

    One process: rendering in worker processes (runs of ~1 MiB of lines, in order) was measured slower on two
    cores, 4.8-6.8 s against 3.6-4.0 s for 1M records: the ~1 GB of lines and shard bytes through pipes costs
    more than it saves. The second core hashes and writes the shards (``ShardWriter``)."""
    renderer = Renderer(spec)
    render, fast = renderer.render, renderer.fast or _no_fast_path
    dumps, append, add_hash = orjson.dumps, writer.append, keys.add
    max_bytes, ordinal = writer.size.max_bytes, 0
    progress = Progress("preparing")
    for record, raw, place, line in source.items():
        ordinal += 1
        try:
            key, request = fast(record, ordinal)
        except Exception:  # what the fast path cannot render, render does (or says why it cannot)
            key, request = render(record, ordinal, SourceRecord(ordinal, place, record, line, raw))
        try:
            request_line = dumps({"key": key, "request": request}, option=_NL)
            record_json = raw if raw is not None else dumps(record)  # a JSON Lines record's own text, as it is
        except TypeError as exc:
            render(record, ordinal, where(place, line))  # a record with a field name that is not a string: its error
            raise DataError(f"{where(place, line)}: record {ordinal} (key {key!r}): "
                            f"the request is not JSON: {exc}") from exc
        if len(request_line) > max_bytes:
            raise too_large(where(place, line), len(request_line), max_bytes)
        append(request_line, record_json)
        add_hash(hash(key))
        if not ordinal & 0xFFF:
            keys.spill_if_full()
            progress.tick(records=ordinal, shards=len(writer.shards) + 1)
    return ordinal


def _no_fast_path(record: dict[str, Any], ordinal: int) -> tuple[str, dict[str, Any]]:
    raise NotImplementedError


def _name_duplicate(spec: Spec, requests: list[Path], suspects: set[int]) -> None:
    """Raise the duplicate-key error naming both records (a rare, slow path: it reads the input again)."""
    found = first_duplicate(iter(requests), suspects)
    if found is None:
        return  # different keys whose hashes met: no duplicate
    key, first, repeat = found
    where = next(r.where for r in open_source(spec.source).records() if r.ordinal == repeat)
    raise DataError(_duplicate(where, repeat, key, first, spec))


def _duplicate(where: str, ordinal: int, key: str, first: int, spec: Spec) -> str:
    return (f"{where}: record {ordinal}: duplicate key {key!r} (record {first} has it too); "
            f"keys must be unique ({spec.where('key')})")


def _shard(spec: Spec, info: ShardInfo) -> Shard:
    requests, manifest = f"shards/{info.requests}", f"shards/{info.manifest}"
    first = Job(n=1, input=requests, count=info.count, digest=info.digest,
                display_name=display_name(spec.name, info.index, 1, info.digest))
    return Shard(info.index, info.count, info.bytes, info.digest, requests, manifest, jobs=[first])


def display_name(spec_name: str, shard: int, n: int, digest: str) -> str:
    """The job's deterministic name: the same shard, attempt and content always give the same one."""
    return f"batchflow-{spec_name[:60]}-s{shard:05d}-j{n}-{digest[:8]}"


def _rejecter(out: IO[bytes]) -> Any:
    def reject(where: str, reason: str, line: bytes) -> None:
        out.write(orjson.dumps({"where": where, "reason": reason,
                                "line": line.decode("utf-8", "replace")}, option=_NL))
        log.warning("record skipped", where=where, reason=reason)

    return reject
