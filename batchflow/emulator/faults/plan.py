"""Seeded, reproducible fault plans for the emulator (`batchflow emulator --faults FILE`).

The engine asks the plan once per HTTP request (`request_fault`, from `http._dispatch`), once per job created
(`job_faults`), once per due job (`job_outcome`, from `JobEngine._decide_outcome`), once per Vertex cancel
(`cancel_outcome`) and once per request line of a job while its output is computed (`line_faults`, from
`execute.run_lines` / `vertex_execute.answer_lines`); `service` holds the plan's limits and output shape. Without
a plan, `NoFaults` answers "no fault" everywhere, with the default `service`.

A plan file is YAML (or JSON); every section and key is optional, unknown keys are errors. A share is a number
0..1 (each job or line drawn on its own); a count N (an integer) takes the first N jobs; a duration is seconds
or a string like "500ms", "2s", "48h"::

    seed: 7                     # an integer; the same plan + seed + sequence of calls gives the same faults
    http:                       # HTTP errors, by endpoint family, exact endpoint name, or "*" for any
      "*":    {rate: 0.10, codes: [429, 500, 503]}   # each matching call fails with this probability, untouched
      create: {rate: 0.2, codes: [503], after: true} # after: the call takes effect, *then* the reply is the error
    hangs:                      # calls that stop answering, keyed as `http` (the most specific rule wins)
      get:      {kind: hang, rate: 0.1}          # the request read, then no answer ever: the call never takes effect
      download: {kind: stall_body, calls: [2]}   # the 2nd call: it takes effect, headers and half the body sent
      upload:   {kind: stall_upload, rate: 1}    # half the request body read, then nothing: it never takes effect
    jobs:                       # job faults: each a share, a count, or true (every job) / false
      fail: 0.2                 # end FAILED, no output (alias: fail_first_attempt)
      expire: 1                 # end EXPIRED at its due time, no output
      stall: 0                  # stay RUNNING past its due time, until cancelled or the time limit
      stuck: 0                  # stay PENDING from creation, never start, until cancelled or the time limit
      late_output: 0            # end SUCCEEDED, the output readable only output.late_seconds after the end
      output_gone: 0            # the output deleted output.retention after the end (after it became readable)
      cancel_delivers: 0        # a cancel still returns the lines finished by then
      cancelling_succeeds: 0    # Vertex: a job in CANCELLING ends SUCCEEDED, output and all
      expire_after: 48h         # the time limit (default: the service's; see below)
      cancelling_seconds: 0.2   # Vertex: how long a cancelled job is CANCELLING (default 0.2 s)
    requests:
      fail: 0.02                # share of request lines answered by an error line instead of a response
      codes: [500, 503, 429]    # the errors' HTTP codes (default: these three)
      blocked: 0.0              # share of generate lines answered as safety-blocked (promptFeedback, no candidates)
      max_tokens: 0.0           # share of generate lines cut at finishReason MAX_TOKENS (JSON cut so it won't parse)
    output:
      drop: 0.0                 # share of output lines silently missing from a job's output
      duplicate: 0.0            # share of output lines written twice
      late_seconds: 1           # how late a late_output job's output comes (default 1 s)
      retention: 2              # how long an output_gone job's output stays readable (default 2 s)
      reserialise_echo: true    # Vertex: the echoed request re-serialised as the service does (vertex/echo.py)
      drop_labels: false        # Vertex: the echoed request carries no `labels`
    quota:                      # Gemini create quotas, as the service's 429 RESOURCE_EXHAUSTED (no Retry-After)
      enqueued_tokens: 3000000  # per model: input tokens (4 bytes a token) of live jobs plus the new one
      concurrent_batches: 100   # live (PENDING or RUNNING) batches, any model
      file_storage_bytes: 1000000 # the Files API's bytes per project: an upload past it is 429 RESOURCE_EXHAUSTED
    access:
      unreadable_buckets: [b]   # Vertex: buckets the project's service agent may not read: a create whose input or
                                # output is in one is 400 FAILED_PRECONDITION naming the agent and the bucket

What each job fault does, surface by surface:

- stall / stuck and the time limit: `jobs.expire_after` when given, else the service's own. Gemini: 48 h after
  creation the job ends EXPIRED with nothing returned. Vertex: a stuck (queued) job ends EXPIRED 72 h after its
  creation; a stalled (running) one is CANCELLED 24 h after it started, keeping the predictions it wrote (all of
  them, or its finished share when `cancel_delivers` deferred them). A stuck job is never picked for
  fail/expire/stall (it never comes due).
- late_output: Gemini: the job reads SUCCEEDED and names `responsesFile`, but files.get/download answer 404
  NOT_FOUND until then (an inline job's resource has no `output` until then). Vertex: the output directory stays
  empty until then.
- output_gone: Gemini: the responses file is deleted (404), an inline job's `output` dropped. Vertex: the
  predictions files are deleted. The times run from the job's end, so a late output goes after it came.
- cancel_delivers: a cancelled job keeps the lines it had finished — each line's own draw against how far the
  job had got when cancelled (0 while PENDING or stuck, then in proportion to its running time, 1/2 for a job
  stalled past its due time). Gemini: CANCELLED with `output` (responses file or inline) holding those lines and
  `batchStats` counting them. Vertex: CANCELLED with `outputInfo` and the partial predictions. With no line
  finished, nothing is delivered.
- A Vertex cancel always passes through CANCELLING (`jobs.cancelling_seconds`); `cancelling_succeeds` picks the
  jobs that then end SUCCEEDED. Gemini has no CANCELLING state: its cancel is immediate.

Only Vertex jobs over GCS take late_output, output_gone and cancel_delivers; BigQuery jobs ignore them (they take
the request faults, each row drawn by its passthrough columns).

A hung call holds its connection until the client gives up (its timeout) or the emulator stops: stopping releases
every hung handler, which closes its connection, so no thread is left blocked. Hangs are decided before the `http`
errors; a hung call draws no error. `calls` scripts them (the n-th call of that endpoint, counted from the
emulator's start), `rate` draws each call; both may be given.

HTTP endpoint families: `upload` (files.upload: the resumable start and its chunks), `files` (files.get,
files.list, files.delete), `download` (files.download), `create` (batches.create, batches.create_embeddings),
`get`, `list`, `cancel`, `delete` (batches.*). An endpoint not in this table (e.g. a Vertex one) belongs to the
family named by the last part of its name (`vertex.create` -> `create`). The most specific rule wins: the exact
endpoint name, then its family, then "*". `emulator.*` (stats) is never faulted. A faulted upload carries
`X-Goog-Upload-Status: final`, so the SDK raises at once rather than retrying the chunk with 1-4 s sleeps.

How each answer is drawn — a hash of (seed, what, identity) mapped onto [0, 1), never a global RNG, so a retry can
succeed:

- HTTP: identity = (endpoint name, how many calls of that endpoint came before): the n-th `batches.get` draws the
  same under the same seed, and the next call draws afresh. Hangs count the calls of their endpoints on their own
  (every call, hung or not), so `calls: [3]` is the third call whatever the errors drew.
- jobs: identity = the job's display name (its id when it has none; ids are random, so such draws are not
  reproducible). batchflow's display names carry the shard, attempt and content, so a resubmission draws afresh.
  stuck, late_output, output_gone and cancel_delivers are decided when a job is created (a count N: the first N
  jobs created), each on its own draw, and kept on the job's record (they survive a restart). stall, expire and
  fail are decided when a job comes due (a count N: the first N jobs whose outcome is decided, creation order when
  jobs are polled in order), checked in that order, once per job and remembered. cancelling_succeeds is drawn at
  the cancel. FAILED and EXPIRED jobs have no output, as with the real API.
- lines: identity = (the job's display name or id, the line's key or `metadata.key` (Vertex: its labels), else
  its position): the same key in another job (a retry) draws afresh. A line is dropped, else failed, else blocked,
  else cut; a line kept may also be doubled.

Errors are Google's shape, `{"error": {"code", "message", "status"}}`, statuses RESOURCE_EXHAUSTED (429),
INTERNAL (500), UNAVAILABLE (503) etc. Counters of every fault injected are in `GET /_emulator/stats` under
`faults` (`http_503`, `http_503_after`, `http_hang`, `http_stall_body`, `http_stall_upload`, `job_failed`,
`job_expired`, `job_stalled`, `job_stuck`, `job_late_output`, `job_output_gone`, `job_cancel_delivers`,
`job_cancelling_succeeded`, `job_time_limit_expired`, `job_time_limit_cancelled`, `quota_enqueued_tokens`,
`quota_concurrent_batches`, `quota_file_storage_bytes`, `line_error_500`, `line_blocked`, `line_max_tokens`,
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

from batchflow.emulator.faults.plan_file import (
    MESSAGES,
    FaultPlanError,
    HangRule,
    HttpRule,
    PlanConfig,
    Service,
    parse_plan,
)
from batchflow.emulator.wire.errors import ApiError

_FAMILIES = {
    "files.upload": "upload", "files.get": "files", "files.list": "files", "files.delete": "files",
    "files.download": "download", "batches.create": "create", "batches.create_embeddings": "create",
    "batches.get": "get", "batches.list": "list", "batches.cancel": "cancel", "batches.delete": "delete",
}
_JOB_KINDS = (("stall", "STALL"), ("expire", "EXPIRED"), ("fail", "FAILED"))
_CREATE_KINDS = ("stuck", "late_output", "output_gone", "cancel_delivers")  # decided when a job is created


@dataclass(frozen=True)
class HttpFault:
    """An error to answer with; `after` means the call takes effect first."""

    error: ApiError
    after: bool = False


@dataclass(frozen=True)
class LineFault:
    """What happens to one output line: replaced by `error`, or its answer `blocked` (safety) or cut at
    MAX_TOKENS (`truncated`); and written `copies` times (0 = dropped)."""

    error: ApiError | None = None
    copies: int = 1
    blocked: bool = False
    truncated: bool = False


@dataclass(frozen=True)
class JobFaults:
    """What the plan decided for a job when it was created (the engine keeps it on the job's record)."""

    stuck: bool = False  # stays PENDING until cancelled or expired
    late_output: bool = False  # the output appears `Service.late_seconds` after the end
    output_gone: bool = False  # the output is deleted `Service.retention` after the end
    cancel_delivers: bool = False  # a cancel still returns the lines finished by then


LineFaults = Callable[[str], LineFault | None]  # a line's identity (its key) -> its fault


class FaultPlan(Protocol):
    """What a fault plan decides; every answer must be reproducible from the plan's seed."""

    @property
    def service(self) -> Service:
        """The service's limits, quotas and output shape under this plan."""

    def request_fault(self, endpoint: str) -> HttpFault | None:
        """An error to answer a call to `endpoint` with (e.g. 429/500/503), or None."""

    def hang(self, endpoint: str) -> str | None:
        """How the next call of `endpoint` stops answering (hang, stall_body, stall_upload), or None."""

    def job_outcome(self, job_id: str, display_name: str | None) -> str | None:
        """A final state to force on a due job (FAILED, EXPIRED) or STALL to keep it running, or None."""

    def job_faults(self, job_id: str, display_name: str | None) -> JobFaults:
        """The faults of a job being created."""

    def cancel_outcome(self, job_id: str, display_name: str | None) -> str:
        """How a Vertex job in CANCELLING ends: CANCELLED, or SUCCEEDED as users report some do."""

    def finished(self, job_id: str, display_name: str | None, identity: str, progress: float) -> bool:
        """Whether a line (by its key) was finished when its job was cancelled `progress` (0..1) of the way."""

    def line_faults(self, job_id: str, display_name: str | None, kind: str) -> LineFaults | None:
        """The per-line fault of one job's output (`kind`: generate or embed), or None when no line of it can be
        faulted."""

    def note(self, name: str) -> None:
        """Count one fault the engine injected on the plan's behalf (an expiry, a refused create)."""

    def counters(self) -> dict[str, int]:
        """How many faults of each kind were injected so far."""


class NoFaults:
    """The plan used when none is given: everything works (within the service's default limits)."""

    service = Service()

    def request_fault(self, endpoint: str) -> HttpFault | None:
        """Never an error."""
        return None

    def hang(self, endpoint: str) -> str | None:
        """Never a hang."""
        return None

    def job_outcome(self, job_id: str, display_name: str | None) -> str | None:
        """Never a forced outcome."""
        return None

    def job_faults(self, job_id: str, display_name: str | None) -> JobFaults:
        """No job fault."""
        return JobFaults()

    def cancel_outcome(self, job_id: str, display_name: str | None) -> str:
        """A cancel cancels."""
        return "CANCELLED"

    def finished(self, job_id: str, display_name: str | None, identity: str, progress: float) -> bool:
        """Never asked: no job delivers on cancel without a plan."""
        return False

    def line_faults(self, job_id: str, display_name: str | None, kind: str) -> LineFaults | None:
        """Never a line fault."""
        return None

    def note(self, name: str) -> None:
        """Nothing is counted without a plan."""

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
        self._hang_calls: Counter[str] = Counter()
        self._counts: Counter[str] = Counter()
        self._taken: Counter[str] = Counter()  # jobs taken so far by each count-based job fault
        self._outcomes: dict[str, str | None] = {}
        self._created: dict[str, JobFaults] = {}

    @property
    def service(self) -> Service:
        """The plan's service settings."""
        return self.config.service

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

    def hang(self, endpoint: str) -> str | None:
        """Scripted (the call's number in `calls`) or drawn for the next call of `endpoint`."""
        rule = self._hang_rule(endpoint)
        if rule is None:
            return None
        with self._lock:
            self._hang_calls[endpoint] += 1
            n = self._hang_calls[endpoint]
        if n not in rule.calls and draw(self.config.seed, "hang", endpoint, n) >= rule.rate:
            return None
        self._count(f"http_{rule.kind}")
        return rule.kind

    def job_outcome(self, job_id: str, display_name: str | None) -> str | None:
        """Decided once per job, then remembered (a stalled job is asked again on every look)."""
        with self._lock:
            if job_id in self._outcomes:
                return self._outcomes[job_id]
            outcome = None
            for kind, state in _JOB_KINDS:
                if self._hit(kind, display_name or job_id):
                    outcome = state
                    self._counts[f"job_{'stalled' if state == 'STALL' else state.lower()}"] += 1
                    break
            self._outcomes[job_id] = outcome
            return outcome

    def job_faults(self, job_id: str, display_name: str | None) -> JobFaults:
        """Decided once per job, each kind on its own draw; a count takes the first N jobs created."""
        with self._lock:
            if job_id not in self._created:
                hits = {kind: self._hit(kind, display_name or job_id) for kind in _CREATE_KINDS}
                self._counts.update(f"job_{kind}" for kind, hit in hits.items() if hit)
                self._created[job_id] = JobFaults(**hits)
            return self._created[job_id]

    def cancel_outcome(self, job_id: str, display_name: str | None) -> str:
        """SUCCEEDED for the jobs `jobs.cancelling_succeeds` picks."""
        with self._lock:
            if not self._hit("cancelling_succeeds", display_name or job_id):
                return "CANCELLED"
            self._counts["job_cancelling_succeeded"] += 1
            return "SUCCEEDED"

    def finished(self, job_id: str, display_name: str | None, identity: str, progress: float) -> bool:
        """A line's own draw against the share of the job done."""
        return draw(self.config.seed, "finished", display_name or job_id, identity) < progress

    def line_faults(self, job_id: str, display_name: str | None, kind: str) -> LineFaults | None:
        """The line fault function of one job; None when the plan faults no lines. Only generated answers can be
        blocked or cut."""
        c = self.config
        blocked_share, cut_share = (c.blocked, c.max_tokens) if kind == "generate" else (0.0, 0.0)
        if not (c.line_fail or c.drop or c.duplicate or blocked_share or cut_share):
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
            blocked = error is None and draw(c.seed, "blocked", job, key) < blocked_share
            truncated = error is None and not blocked and draw(c.seed, "max-tokens", job, key) < cut_share
            if blocked or truncated:
                self._count("line_blocked" if blocked else "line_max_tokens")
            copies = 1
            if draw(c.seed, "duplicate", job, key) < c.duplicate:
                copies = 2
                self._count("line_duplicated")
            found = LineFault(error, copies, blocked, truncated)
            return None if found == LineFault() else found

        return fault

    def note(self, name: str) -> None:
        """Count a fault the engine injected."""
        self._count(name)

    def counters(self) -> dict[str, int]:
        """A copy of the counters."""
        with self._lock:
            return dict(self._counts)

    def _hit(self, kind: str, identity: str) -> bool:
        """Whether a job fault picks this job (under the lock): a count takes the first N asked, a share draws."""
        amount = self.config.jobs.get(kind, 0)
        if isinstance(amount, int) and not isinstance(amount, bool):
            hit = self._taken[kind] < amount
            self._taken[kind] += hit
            return hit
        return draw(self.config.seed, "job", kind, identity) < amount

    def _rule(self, endpoint: str) -> HttpRule | None:
        if endpoint.startswith("emulator.") or endpoint == "unknown":
            return None
        http = self.config.http
        return http.get(endpoint) or http.get(family(endpoint)) or http.get("*")

    def _hang_rule(self, endpoint: str) -> HangRule | None:
        if endpoint.startswith("emulator.") or endpoint == "unknown":
            return None
        hangs = self.config.hangs
        return hangs.get(endpoint) or hangs.get(family(endpoint)) or hangs.get("*")

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
