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
from batchflow.limits import spec_job_size
from batchflow.sharding import ShardInfo, ShardWriter
from batchflow.sources import SourceRecord, open_source
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
    """Every record of the source with its key and request; a duplicate key is an error naming both."""
    renderer = Renderer(spec)
    seen: dict[str, int] = {}
    for rec in open_source(spec.source, _rejecter(rejects) if rejects else None).records():
        key, request = renderer.render(rec.record, rec.ordinal, rec.where)
        first = seen.setdefault(key, rec.ordinal)
        if first != rec.ordinal:
            raise DataError(f"{rec.where}: record {rec.ordinal}: duplicate key {key!r} "
                            f"(record {first} has it too); keys must be unique ({spec.where('key')})")
        yield Rendered(rec, key, request)


def prepare(spec: Spec, store: StateStore, source_fingerprint: str) -> State:
    """Write every shard, then the state: a bad record stops this with nothing submitted and no state saved."""
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
    state = State(spec.name, fingerprint(spec, source_fingerprint), records=records,
                  shards=[_shard(spec, info) for info in shards])
    store.save(state)
    log.info("prepared", records=records, shards=len(shards))
    return state


def _write_shards(spec: Spec, writer: ShardWriter, rejects_path: Path) -> int:
    records = 0
    try:
        with open(rejects_path, "wb") as rejects:
            for item in rendered(spec, rejects):
                writer.add(_request_line(item), orjson.dumps({"key": item.key, "record": item.record.record},
                                                             option=_NL), item.record.where)
                records += 1
    finally:
        if rejects_path.stat().st_size == 0:
            rejects_path.unlink()
    writer.close()
    return records


def _request_line(item: Rendered) -> bytes:
    try:
        return orjson.dumps({"key": item.key, "request": item.request}, option=_NL)
    except TypeError as exc:
        raise DataError(f"{item.record.where}: record {item.record.ordinal} (key {item.key!r}): "
                        f"the request is not JSON: {exc}") from exc


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
