"""A finished job's results -> one normalised line per request in the state dir; never matched by position.

Every line the backend returns must carry a key the job sent. A key the job did not send is a loud error; a
key returned twice, or a request of a succeeded job with no line, becomes an error result for that key, so it
is retried (within ``retry.request_attempts``) and reported, never silently merged.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from batchflow import logs
from batchflow.backends.base import Backend, JobInfo
from batchflow.errors import BackendError
from batchflow.spec.spec import Spec
from batchflow.state.cost import Usage, add_usage
from batchflow.state.shard_files import ContentDigest, key_json, request_key
from batchflow.state.state import SUCCEEDED, Job, Shard

log = logs.get_logger(__name__)

_NL = orjson.OPT_APPEND_NEWLINE


Redo = Callable[[dict[str, Any]], str | None]
"""Why an answer should be asked for again (``retry.on``: a cut or unparsable answer), or None."""


def redo_of(spec: Spec) -> Redo | None:
    """``retry.on`` as a test of a collected result: ``max_tokens`` (finishReason MAX_TOKENS), ``parse_error``
    (``output.parse: json`` and the text is not JSON)."""
    on, parse = spec.retry.on, spec.output.parse == "json"
    if not on:
        return None

    def redo(result: dict[str, Any]) -> str | None:
        candidates = (result.get("response") or {}).get("candidates") or []
        if not candidates:
            return None
        first = candidates[0]
        if "max_tokens" in on and first.get("finishReason") == "MAX_TOKENS":
            return "max_tokens"
        if "parse_error" in on and parse:
            text = "".join(p.get("text", "") for p in (first.get("content") or {}).get("parts") or []
                           if not p.get("thought"))
            try:
                orjson.loads(text)
            except orjson.JSONDecodeError:
                return "parse_error"
        return None

    return redo


@dataclass
class Outcome:
    """Where a record stands: its latest result (an ok one wins, unless ``retry.on`` asks for it again), how many
    answers it had, how many of the jobs it was sent in ended (failed, expired, cancelled) before answering it, or
    reached it with its media gone (an error marked ``restage``)."""

    result: dict[str, Any]
    attempts: int = 0
    job_failures: int = 0
    redo: Redo | None = None

    @property
    def ok(self) -> bool:
        return "response" in self.result and (self.redo is None or self.redo(self.result) is None)

    @property
    def sent(self) -> int:
        """How many jobs the record was sent in."""
        return self.attempts + self.job_failures

    def add(self, line: dict[str, Any]) -> None:
        if "job_error" in line:
            self.job_failures += not line.get("cancelled")  # a job the user cancelled is no failure of the job
            line = {"error": line["job_error"]}
        elif (line.get("error") or {}).get("restage"):
            # its media were gone before the model read them (a Files API file expired while the job waited):
            # the request was never tried, so it costs a job attempt, not one of its own, and goes again restaged
            self.job_failures += 1
        else:
            self.attempts += 1
        if not self.ok:
            self.result = line


def input_keys(path: Path) -> list[str]:
    """The keys of a job's request lines, in order."""
    with open(path, "rb") as fh:
        return [request_key(line) for line in fh if line.strip()]


def collect(backend: Backend, root: Path, shard: Shard, job: Job, info: JobInfo) -> Path:
    """Write the job's results to ``results/`` and return the file; counts go into ``job``.

    Streamed: each result line is written as the backend reads it (one line per key; the keys the output has no
    line for at the end), so a collection holds the job's keys, never its answers: several run at once. Keys are
    compared as the JSON text ``prepare`` wrote them in (a slice of each request line, nothing parsed)."""
    with open(root / job.input, "rb") as fh:
        sent = [key_json(line) for line in fh if not line.isspace()]  # no copy of each line, as strip() makes
    # Each key's place in ``sent``, and what came for it: 0 nothing, 1 a response, 2 an error. (A result's key is
    # made JSON to be looked up, never kept: see ``jsonio.dumps_kept``.)
    place = {key: n for n, key in enumerate(sent)}
    came = bytearray(len(sent))
    twice: set[int] = set()
    out = _results_path(root, shard, job)
    tmp = out.with_suffix(".tmp")
    where = f"job {info.name} (shard {shard.index})"
    tokens, last = [0, 0, 0], None
    with open(tmp, "wb", buffering=1 << 20) as fh:
        write, lookup, dumps = fh.write, place.get, orjson.dumps  # locals: this loop runs once per line
        for key, response, error, line, made in backend.results(info, out.parent, root / job.input):
            n = lookup(made or dumps(key))
            if n is None:
                raise BackendError(f"{where}: the output has a line for key {key!r}, which the job did not "
                                   "send; refusing to merge it")
            if came[n]:
                twice.add(n)
                continue
            if error is not None:
                came[n] = 2
                write(dumps({"key": key, "error": error}, option=_NL))
                continue
            came[n] = 1
            write(line or dumps({"key": key, "response": response}, option=_NL))
            # Vertex answers identical requests once, for each key that asked, and bills that one answer
            if response is not None and response is not last:
                last = response
                add_usage(tokens, response)
        unanswered = orjson.dumps(_unanswered(job, info))[1:]  # the same for every key: ``…}`` after the key
        for n, sent_key in enumerate(sent):
            if not came[n]:
                write(b'{"key":%b,%b\n' % (sent_key, unanswered))
    if twice:
        _one_line_each(tmp, {sent[n] for n in twice}, where)
    os.replace(tmp, out)
    job.ok = came.count(1) - sum(came[n] == 1 for n in twice)
    job.failed = len(sent) - job.ok
    job.usage = Usage(*tokens).as_dict()
    return out


def _unanswered(job: Job, info: JobInfo) -> dict[str, Any]:
    """The result of a request the job's output has no line for."""
    if job.status == SUCCEEDED:  # the backend ran the job but gave this request no line
        return {"error": {"code": None, "message": f"no result in the output of {info.name}"}}
    # the job failed, expired or was cancelled before answering this request
    cancelled = {"cancelled": True} if job.cancel_requested else {}
    return {"job_error": {"code": None, "message": _ended(info)}, **cancelled}


def _one_line_each(path: Path, twice: set[bytes], where: str) -> None:
    """A key the output answered more than once gets one error line instead (rare: the file is written again)."""
    keys = sorted(orjson.loads(key) for key in twice)
    for key in keys:
        log.error("duplicate result", job=where, key=key)
    again = path.with_suffix(".twice.tmp")
    with open(path, "rb") as src, open(again, "wb", buffering=1 << 20) as dst:
        for line in src:
            if orjson.dumps(orjson.loads(line)["key"]) not in twice:
                dst.write(line)
        for key in keys:
            message = f"{where} returned more than one result for this key"
            dst.write(orjson.dumps({"key": key, "error": {"code": None, "message": message}}, option=_NL))
    os.replace(again, path)


def collect_lost(root: Path, shard: Shard, job: Job, message: str) -> Path:
    """A succeeded job whose output never came, or is gone: each request it sent ends as the job's failure (a job
    attempt, as for an expired job), so ``next_job`` sends it again."""
    out = _results_path(root, shard, job)
    tmp = out.with_suffix(".tmp")
    with open(tmp, "wb", buffering=1 << 20) as fh:
        for key in input_keys(root / job.input):
            fh.write(orjson.dumps({"key": key, "job_error": {"code": None, "message": message}}, option=_NL))
    os.replace(tmp, out)
    job.ok, job.failed, job.usage = 0, job.count, Usage().as_dict()
    return out


def _results_path(root: Path, shard: Shard, job: Job) -> Path:
    out = root / Path(shard.requests).parent.parent / "results" / f"shard-{shard.index:05d}-j{job.n}.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


def _ended(info: JobInfo) -> str:
    return f"job {info.name} ended {info.status}" + (f": {info.error}" if info.error else "")


def outcomes(root: Path, shard: Shard, redo: Redo | None = None) -> dict[str, Outcome]:
    """Every key of the shard that was sent, from all its collected jobs (later ones win, an ok one wins)."""
    found: dict[str, Outcome] = {}
    for job in shard.jobs:
        if not job.results:
            continue
        with open(root / job.results, "rb") as fh:
            for line in fh:
                item = orjson.loads(line)
                key = item.pop("key")
                outcome = found.get(key)
                if outcome is None:
                    outcome = found[key] = Outcome({"error": None}, redo=redo)
                outcome.add(item)
    return found


def subset(root: Path, shard: Shard, keys: set[str], n: int, jobs_dir: str = "jobs") -> tuple[str, int, str]:
    """Write the shard's request lines for ``keys`` as job ``n``'s input; returns (path, count, digest)."""
    rel = f"{jobs_dir}/shard-{shard.index:05d}-j{n}.jsonl".removeprefix("./")
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    digest = ContentDigest()
    count = 0
    with open(root / shard.requests, "rb") as src, open(root / rel, "wb") as dst:
        for line in src:
            if request_key(line) in keys:
                dst.write(line)
                digest.update(line)
                count += 1
    return rel, count, digest.hexdigest()
