"""Seeded, reproducible fault plans for the emulator (`batchflow emulator --faults FILE`).

The engine asks the plan at three points: once per HTTP request (`request_fault`, from `http._dispatch`), once
per due job (`job_outcome`, from `JobEngine._decide_outcome`) and once per request line of a job while its output
is computed (`line_faults`, from `execute.run_lines`). Without a plan, `NoFaults` answers "no fault" everywhere.

A plan file is YAML (or JSON); every section and key is optional, unknown keys are errors::

    seed: 7                     # an integer; the same plan + seed + sequence of calls gives the same faults
    http:                       # HTTP errors, by endpoint family, exact endpoint name, or "*" for any
      "*":    {rate: 0.10, codes: [429, 500, 503]}   # each matching call fails with this probability, untouched
      create: {rate: 0.2, codes: [503], after: true} # after: the call takes effect, *then* the reply is the error
    jobs:                       # final states forced on jobs (each a share 0..1 (float) or a count N (integer))
      fail: 0.2                 # end FAILED (alias: fail_first_attempt)
      expire: 1                 # end EXPIRED
      stall: 0                  # stay RUNNING until cancelled
    requests:
      fail: 0.02                # share of request lines answered by an error line instead of a response
      codes: [500, 503, 429]    # the errors' HTTP codes (default: these three)
    output:
      drop: 0.0                 # share of output lines silently missing from a job's output
      duplicate: 0.0            # share of output lines written twice

HTTP endpoint families: `upload` (files.upload: the resumable start and its chunks), `files` (files.get,
files.list, files.delete), `download` (files.download), `create` (batches.create, batches.create_embeddings),
`get`, `list`, `cancel`, `delete` (batches.*). An endpoint not in this table (e.g. a Vertex one) belongs to the
family named by the last part of its name (`vertex.create` -> `create`). The most specific rule wins: the exact
endpoint name, then its family, then "*". `emulator.*` (stats) is never faulted. A faulted upload carries
`X-Goog-Upload-Status: final`, so the SDK raises at once rather than retrying the chunk with 1-4 s sleeps.

How each answer is drawn — a hash of (seed, what, identity) mapped onto [0, 1), never a global RNG, so a retry can
succeed:

- HTTP: identity = (endpoint name, how many calls of that endpoint came before): the n-th `batches.get` draws the
  same under the same seed, and the next call draws afresh.
- jobs: identity = the job's display name (its id when it has none; ids are random, so such draws are not
  reproducible). batchflow's display names carry the shard, attempt and content, so a resubmission draws afresh.
  A count N takes the first N jobs whose outcome is decided (creation order when jobs are polled in order).
  Checked in the order stall, expire, fail; each job is decided once and remembered. FAILED and EXPIRED jobs
  have no output, as with the real API.
- lines: identity = (the job's display name or id, the line's key or `metadata.key`, else its position): the same
  key in another job (a retry) draws afresh.

Errors are Google's shape, `{"error": {"code", "message", "status"}}`, statuses RESOURCE_EXHAUSTED (429),
INTERNAL (500), UNAVAILABLE (503) etc. Counters of every fault injected are in `GET /_emulator/stats` under
`faults` (`http_503`, `http_503_after`, `job_failed`, `job_expired`, `job_stalled`, `line_error_500`,
`line_dropped`, `line_duplicated`); they live in memory, so a restarted emulator starts them, and the HTTP call
numbering, from zero.
"""

from __future__ import annotations

import hashlib
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import yaml

from batchflow.emulator.errors import ApiError
from batchflow.emulator.faults_config import MESSAGES, FaultPlanError, HttpRule, PlanConfig, parse_plan

_FAMILIES = {
    "files.upload": "upload", "files.get": "files", "files.list": "files", "files.delete": "files",
    "files.download": "download", "batches.create": "create", "batches.create_embeddings": "create",
    "batches.get": "get", "batches.list": "list", "batches.cancel": "cancel", "batches.delete": "delete",
}
_JOB_KINDS = (("stall", "STALL"), ("expire", "EXPIRED"), ("fail", "FAILED"))


@dataclass(frozen=True)
class HttpFault:
    """An error to answer with; `after` means the call takes effect first."""

    error: ApiError
    after: bool = False


@dataclass(frozen=True)
class LineFault:
    """What happens to one output line: replaced by `error`, and/or written `copies` times (0 = dropped)."""

    error: ApiError | None = None
    copies: int = 1


LineFaults = Callable[[str], LineFault | None]  # a line's identity (its key) -> its fault


class FaultPlan(Protocol):
    """What a fault plan decides; every answer must be reproducible from the plan's seed."""

    def request_fault(self, endpoint: str) -> HttpFault | None:
        """An error to answer a call to `endpoint` with (e.g. 429/500/503), or None."""

    def job_outcome(self, job_id: str, display_name: str | None) -> str | None:
        """A final state to force on a due job (FAILED, EXPIRED) or STALL to keep it running, or None."""

    def line_faults(self, job_id: str, display_name: str | None) -> LineFaults | None:
        """The per-line fault of one job's output, or None when no line of it can be faulted."""

    def counters(self) -> dict[str, int]:
        """How many faults of each kind were injected so far."""


class NoFaults:
    """The plan used when none is given: everything works."""

    def request_fault(self, endpoint: str) -> HttpFault | None:
        """Never an error."""
        return None

    def job_outcome(self, job_id: str, display_name: str | None) -> str | None:
        """Never a forced outcome."""
        return None

    def line_faults(self, job_id: str, display_name: str | None) -> LineFaults | None:
        """Never a line fault."""
        return None

    def counters(self) -> dict[str, int]:
        """Nothing injected."""
        return {}


def api_error(code: int) -> ApiError:
    """The error Google answers with for an HTTP code."""
    status, message = MESSAGES[code]
    return ApiError(code, status, message)


def draw(seed: int, *parts: object) -> float:
    """A uniform number in [0, 1) determined by the seed and `parts` alone."""
    blob = "\x1f".join(map(str, (seed, *parts))).encode()
    return int.from_bytes(hashlib.blake2b(blob, digest_size=8).digest(), "big") / 2.0**64


def family(endpoint: str) -> str:
    """The family an endpoint name belongs to (see the module docstring)."""
    return _FAMILIES.get(endpoint) or endpoint.rsplit(".", 1)[-1]


class SeededFaults:
    """A fault plan driven by a `PlanConfig`; thread-safe."""

    def __init__(self, config: PlanConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._calls: Counter[str] = Counter()
        self._counts: Counter[str] = Counter()
        self._taken: Counter[str] = Counter()  # jobs taken so far by each count-based job fault
        self._outcomes: dict[str, str | None] = {}

    def request_fault(self, endpoint: str) -> HttpFault | None:
        """Draw for the next call of `endpoint`."""
        rule = self._rule(endpoint)
        if rule is None:
            return None
        seed = self.config.seed
        with self._lock:
            self._calls[endpoint] += 1
            n = self._calls[endpoint]
        if draw(seed, "http", endpoint, n) >= rule.rate:
            return None
        code = rule.codes[int(draw(seed, "http-code", endpoint, n) * len(rule.codes))]
        self._count(f"http_{code}" + ("_after" if rule.after else ""))
        return HttpFault(api_error(code), rule.after)

    def job_outcome(self, job_id: str, display_name: str | None) -> str | None:
        """Decided once per job, then remembered (a stalled job is asked again on every look)."""
        with self._lock:
            if job_id in self._outcomes:
                return self._outcomes[job_id]
            outcome = None
            for kind, state in _JOB_KINDS:
                amount = self.config.jobs.get(kind, 0)
                if isinstance(amount, int) and not isinstance(amount, bool):
                    hit = self._taken[kind] < amount
                    self._taken[kind] += hit
                else:
                    hit = draw(self.config.seed, "job", kind, display_name or job_id) < amount
                if hit:
                    outcome = state
                    self._counts[f"job_{'stalled' if state == 'STALL' else state.lower()}"] += 1
                    break
            self._outcomes[job_id] = outcome
            return outcome

    def line_faults(self, job_id: str, display_name: str | None) -> LineFaults | None:
        """The line fault function of one job; None when the plan faults no lines."""
        c = self.config
        if not (c.line_fail or c.drop or c.duplicate):
            return None
        job = display_name or job_id

        def fault(key: str) -> LineFault | None:
            if draw(c.seed, "drop", job, key) < c.drop:
                self._count("line_dropped")
                return LineFault(copies=0)
            error = None
            if draw(c.seed, "line", job, key) < c.line_fail:
                code = c.line_codes[int(draw(c.seed, "line-code", job, key) * len(c.line_codes))]
                error = api_error(code)
                self._count(f"line_error_{code}")
            copies = 1
            if draw(c.seed, "duplicate", job, key) < c.duplicate:
                copies = 2
                self._count("line_duplicated")
            return LineFault(error, copies) if error or copies != 1 else None

        return fault

    def counters(self) -> dict[str, int]:
        """A copy of the counters."""
        with self._lock:
            return dict(self._counts)

    def _rule(self, endpoint: str) -> HttpRule | None:
        if endpoint.startswith("emulator.") or endpoint == "unknown":
            return None
        http = self.config.http
        return http.get(endpoint) or http.get(family(endpoint)) or http.get("*")

    def _count(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1


def load_faults(path: Path | None) -> FaultPlan:
    """The fault plan in `path` (None: no faults); raises FaultPlanError naming the file and the bad key."""
    if path is None:
        return NoFaults()
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise FaultPlanError(f"{path}: cannot read the fault plan: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        raise FaultPlanError(f"{where}: not YAML or JSON: {getattr(exc, 'problem', None) or exc}") from None
    return SeededFaults(parse_plan(raw, str(path)))
