"""``python -m benchmarks.bench --records 1000000``: batchflow's local work against its floor, side by side.

It generates its own input, then measures in one run, each case in a fresh process, repetitions interleaved (so
a noisy machine slows both sides of a ratio alike), and prints medians and ratios:

1. the floor: one orjson pass over the file (parse, build the request by hand, serialise, buffered writes);
2. batchflow's prep (read -> render -> key -> shard files, ``Runner.load_or_prepare``, what ``run`` runs) for a
   one-field ``prompt:`` spec and a structured ``request:`` spec, each against the floor of its own request;
3. batchflow's merge of collected results and shard manifests into the output (``run`` on a finished state)
   against its floor (the results into a dict per shard, each manifest line joined, orjson out);
4. the incremental prep: a finished, kept state over ``--records`` records whose input then grew by 10 % (read
   and digest it all, compare every record with the kept answers, write the units of the new ones), against the
   floor of the grown file;
5. the peak RSS of prep, merge and incremental prep at ``--records`` and at ``--big`` (5x by default) records;
6. a no-op re-run of a finished 100-shard spec: wall time and API calls;
7. the API calls of each poll cycle with 50 jobs in flight;
8. the time to all submitted: ``run`` against a separately started ``batchflow emulator`` (gemini backend) until
   every job is created (prep, staging, creates), against the larger of the prep alone and a raw upload of the
   same shard files through google-genai's ``files.upload``, one after another, and against the orjson floor;
   ``--baseline DIR`` measures another version of batchflow the same way, side by side;
9. the time to collected: ``run`` on a state whose jobs (against a separate emulator, gemini backend) have all
   succeeded, none collected yet, until every job is collected and every unit settled (stopped at the keep
   step), against a raw download of the same output files through google-genai's ``files.download``, one after
   another, and against that download with each line then parsed by orjson; ``--baseline DIR`` too.

No timing is asserted: ``--check`` only makes the exit status say whether the targets were met.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import structlog

from benchmarks import api as bench_api
from benchmarks import data as bench_data
from benchmarks.cases import finish, grown, set_aside

TARGETS = {"prep": 2.0, "merge": 2.0, "incremental": 2.0, "rss_mb": 200.0, "rss_growth": 1.10, "noop_s": 1.0,
           "per_cycle": 2.0, "submitted": 1.25, "submitted_floor": 2.5, "collected": 2.5}
# Run a case from this file with another version of batchflow on the path (``--baseline``): the same measurement.
REPO = Path(__file__).resolve().parents[1]  # the benchmarks run from the repository, not from the wheel
_RUN_CASE = "import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"


def machine() -> str:
    """One line: CPU model and count, memory, OS, Python, and the load when asked (the machine may be shared)."""
    model = "?"
    try:
        with open("/proc/cpuinfo") as fh:
            model = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), "?")
        with open("/proc/meminfo") as fh:
            mem = f"{int(fh.readline().split()[1]) / 2**20:.0f} GiB"
    except OSError:
        mem = "?"
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"{model}, {os.cpu_count()} cores, {mem}; {platform.system()} {platform.release()}; "
            f"Python {platform.python_version()}; load average {load}")


def case(name: str, baseline: Path | None = None, **params: Any) -> dict[str, float]:
    """Run one case in a fresh process; its wall and CPU seconds and peak RSS. ``baseline``: with that copy of
    batchflow imported instead of this one (the case's own code is this file's).

    The disk is synced first: the gigabytes earlier cases wrote are otherwise written back while a later case
    runs, by kernel threads that take a share of a two-core machine from whichever case it happens to be."""
    os.sync()
    args, cwd = ["-m", "benchmarks.cases"], None
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    if baseline is not None:
        from benchmarks import cases as bench_cases

        # the baseline's batchflow first, this repository's benchmarks after it (a baseline must have this layout)
        args, cwd = ["-c", _RUN_CASE, bench_cases.__file__], tempfile.gettempdir()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(baseline), str(REPO)])}
    out = subprocess.run([sys.executable, *args, name, json.dumps(params, default=str)], check=True,
                         capture_output=True, text=True, env=env, cwd=cwd)
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _median(runs: list[dict[str, float]], field: str) -> float:
    return statistics.median(r[field] for r in runs)


def _progress(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


def _gemini_spec(data: Path, name: str, url: str) -> Path:
    """The ``prompt:`` spec of ``data`` on the gemini backend at ``url``, every job created at once: no quota waits."""
    return bench_data.write_spec(data.parent, name, data, "prompt", backend={"type": "gemini", "base_url": url},
                                 jobs={"max_concurrent": 1000, "poll_interval": "1h", "max_enqueued_tokens": 10**12})


def _succeeded(data: Path, name: str, url: str, baseline: Path | None) -> Path:
    """A spec whose jobs were all created (by ``baseline``'s batchflow, if given) and have all succeeded, none
    collected, its state set aside for the time-to-collected case to start from; the spec."""
    _progress(f"{name}: creating its jobs and waiting for them to succeed")
    spec, downloaded = _gemini_spec(data, name, url), bench_api.downloads(url)
    case("submitted", baseline, spec=spec)  # ends after one poll, before any job has ended
    if bench_api.downloads(url) != downloaded:
        raise RuntimeError(f"{name}: some jobs ended, and were collected, before the run that created them ended; "
                           "the emulator's jobs need more time")
    bench_api.finished_outputs(url, name)
    set_aside(spec)
    return spec


class Bench:
    def __init__(self, work: Path, records: int, big: int, repeat: int, quick: bool) -> None:
        self.work, self.records, self.big, self.repeat, self.quick = work, records, big, repeat, quick
        self.results: dict[str, Any] = {"records": records, "big": big, "repeat": repeat}

    def data(self, records: int) -> tuple[Path, dict[str, Path]]:
        directory = self.work / f"n{records}"
        directory.mkdir(exist_ok=True)
        data = directory / "reviews.jsonl"
        if not data.exists():
            _progress(f"writing {records:,} records")
            bench_data.write_records(data, records)
        self.results.setdefault("input_mb", {})[records] = round(data.stat().st_size / 1e6, 1)
        specs = {kind: bench_data.write_spec(directory, kind, data, kind) for kind in ("prompt", "request")}
        return data, specs

    def prep(self) -> None:
        data, specs = self.data(self.records)
        runs: dict[str, list[dict[str, float]]] = {k: [] for k in
                                                   ("floor prompt", "prep prompt", "floor request", "prep request")}
        for rep in range(self.repeat):
            _progress(f"prep, repetition {rep + 1} of {self.repeat}")
            for kind in ("prompt", "request"):
                runs[f"floor {kind}"].append(case("floor", kind=kind, data=data, dir=data.parent))
                runs[f"prep {kind}"].append(case("prep", spec=specs[kind]))
        self.results["prep"] = runs

    def merge(self) -> None:
        data, specs = self.data(self.records)
        _progress("preparing a finished state to merge")
        root = finish(specs["prompt"])
        runs: dict[str, list[dict[str, float]]] = {"merge floor": [], "merge": []}
        for rep in range(self.repeat):
            _progress(f"merge, repetition {rep + 1} of {self.repeat}")
            runs["merge floor"].append(case("merge-floor", root=root, dir=data.parent))
            runs["merge"].append(case("merge", spec=specs["prompt"]))
        self.results["merge"] = runs

    def grown(self, records: int) -> tuple[Path, Path]:
        """A finished, kept state over ``records`` records and its input grown by 10 %: (spec, grown data)."""
        directory = self.work / f"inc{records}"
        directory.mkdir(exist_ok=True)
        data = directory / "reviews.jsonl"
        _progress(f"a finished state over {records:,} records, then 10 % more records")
        spec = bench_data.write_spec(directory, "incremental", data, "prompt")
        bench_data.write_records(data, records)
        grown(spec, data, records, records // 10)
        return spec, data

    def incremental(self) -> None:
        spec, data = self.grown(self.records)
        runs: dict[str, list[dict[str, float]]] = {"floor grown": [], "incremental": []}
        for rep in range(self.repeat):
            _progress(f"incremental prep, repetition {rep + 1} of {self.repeat}")
            runs["floor grown"].append(case("floor", kind="prompt", data=data, dir=data.parent))
            runs["incremental"].append(case("incremental", spec=spec))
        self.results["incremental"] = runs

    def big_rss(self) -> None:
        if not self.big:
            return
        _, specs = self.data(self.big)
        _progress(f"prep and merge at {self.big:,} records (peak RSS)")
        prep = case("prep", spec=specs["prompt"])
        finish(specs["prompt"])
        self.results["big_rss"] = {"prep": prep, "merge": case("merge", spec=specs["prompt"])}
        spec, _ = self.grown(self.big)
        _progress(f"incremental prep at {self.big:,} records (peak RSS)")
        self.results["big_rss"]["incremental"] = case("incremental", spec=spec)

    def naive(self) -> None:
        data, _ = self.data(self.records)
        _progress("the hand-written json + Jinja2 script (once)")
        self.results["naive"] = case("naive", data=data, dir=data.parent)

    def submitted(self, baseline: Path | None) -> None:
        """Time to all submitted, beside the prep alone and the raw upload of the same shards (the floors)."""
        data, specs = self.data(self.records)
        runs: dict[str, list[dict[str, float]]] = {k: [] for k in ("floor", "prep", "upload", "submitted",
                                                                   "baseline")}
        shards = bench_api.shard_dir(specs["prompt"])
        with bench_api.separate_emulator(self.work / "emulator-submit") as url:
            for rep in range(self.repeat):
                _progress(f"time to all submitted, repetition {rep + 1} of {self.repeat}")
                runs["floor"].append(case("floor", kind="prompt", data=data, dir=data.parent))
                runs["prep"].append(case("prep", spec=specs["prompt"]))
                runs["upload"].append(case("upload-floor", url=url, shards=shards))
                bench_api.empty(url)
                for kind, code in (("submitted", None), ("baseline", baseline)):
                    if kind == "baseline" and code is None:
                        continue
                    name = f"submit-{kind[0]}{rep}"
                    spec = _gemini_spec(data, name, url)
                    runs[kind].append({**case("submitted", code, spec=spec), "jobs": bench_api.created(url, name)})
                    bench_api.empty(url)
        self.results["submitted"] = runs

    def collected(self, baseline: Path | None) -> None:
        """Time to collected, beside the raw download of the same outputs (the floor)."""
        data, _ = self.data(self.records)
        codes = {"collected": None, "baseline": baseline} if baseline else {"collected": None}
        runs: dict[str, list[dict[str, float]]] = {"download": [], "collected": [], "baseline": []}
        # Jobs that end long enough after their create for the run creating them to poll them once before the
        # first ends (its 34 creates take 1-3 s at 1M records), and soon enough not to wait long for them all.
        job_seconds = 0.5 + self.records / 100_000
        with bench_api.separate_emulator(self.work / "emulator-collect", job_seconds) as url:
            specs = {kind: _succeeded(data, f"collect-{kind[0]}", url, code) for kind, code in codes.items()}
            for rep in range(self.repeat):
                _progress(f"time to collected, repetition {rep + 1} of {self.repeat}")
                runs["download"].append(case("download-floor", url=url, spec_name="collect-c",
                                             dir=self.work / "download"))
                for kind, spec in specs.items():
                    runs[kind].append(case("collected", codes[kind], spec=spec))
        self.results["collected"] = runs

    def api(self) -> None:
        _progress("no-op re-run of a finished 100-shard spec")
        self.results["noop"] = bench_api.noop_rerun(self.work / "api", per_shard=2 if self.quick else 20)
        _progress("a poll cycle with 50 jobs in flight")
        self.results["poll"] = bench_api.poll_cycle(self.work / "api", cycles=2 if self.quick else 5)


def report(r: dict[str, Any], where: str) -> tuple[str, bool]:
    """The table, and whether every target was met."""
    lines = [f"batchflow bench: {r['records']:,} records ({r.get('input_mb', {}).get(r['records'], '?')} MB), "
             f"medians of {r['repeat']}", f"machine: {where}", "",
             f"{'case':<16}{'wall s':>9}{'cpu s':>9}{'rss MB':>9}{'ratio':>8}  target"]
    ok = True

    def row(name: str, runs: list[dict[str, float]], floor: list[dict[str, float]] | None, target: str) -> None:
        nonlocal ok
        wall = _median(runs, "wall")
        ratio = f"{wall / _median(floor, 'wall'):.2f}x" if floor else ""
        if floor and target:
            ok &= wall / _median(floor, "wall") <= float(target.strip("<=x "))
        lines.append(f"{name:<16}{wall:>9.2f}{_median(runs, 'cpu'):>9.2f}{_median(runs, 'rss_mb'):>9.0f}"
                     f"{ratio:>8}  {target}")

    prep, merge = r["prep"], r["merge"]
    for kind in ("prompt", "request"):
        row(f"floor {kind}", prep[f"floor {kind}"], None, "")
        row(f"prep {kind}", prep[f"prep {kind}"], prep[f"floor {kind}"], "<= 2.0x")
    row("merge floor", merge["merge floor"], None, "")
    row("merge", merge["merge"], merge["merge floor"], "<= 2.0x")
    inc = r["incremental"]
    row("floor +10 %", inc["floor grown"], None, "")
    row("incremental", inc["incremental"], inc["floor grown"], "<= 2.0x")
    if "naive" in r:
        n = r["naive"]
        lines.append(f"{'json+jinja2':<16}{n['wall']:>9.2f}{n['cpu']:>9.2f}{n['rss_mb']:>9.0f}"
                     f"{n['wall'] / _median(prep['floor prompt'], 'wall'):>7.2f}x  (the script by hand, once)")
    lines.append("")
    for stage, runs in (("prep", prep["prep prompt"]), ("merge", merge["merge"]),
                        ("incremental", inc["incremental"])):
        small = max(x["rss_mb"] for x in runs)
        text = f"peak RSS {stage:<12}{small:>6.0f} MB at {r['records']:,}"
        ok &= small < TARGETS["rss_mb"]
        if "big_rss" in r:
            large = r["big_rss"][stage]["rss_mb"]
            ok &= large <= small * TARGETS["rss_growth"]
            text += f", {large:.0f} MB at {r['big']:,} ({large / small - 1:+.0%}; {r['big_rss'][stage]['wall']:.1f} s)"
        lines.append(text + "   target < 200 MB, <= +10 %")
    for key, rows in (("submitted", _submitted_lines), ("collected", _collected_lines)):
        if key in r:
            more, met = rows(r[key])
            lines += more
            ok &= met
    noop, poll = r["noop"], r["poll"]
    ok &= noop["cli_s"] < TARGETS["noop_s"] and noop["mutating_calls"] == 0
    ok &= poll["per_cycle"] <= TARGETS["per_cycle"]
    lines += [f"no-op re-run of a finished {noop['shards']}-shard spec: {noop['cli_s']:.2f} s as a command "
              f"({noop['in_process_s'] * 1000:.0f} ms in process), {noop['calls']} API calls in {noop['runs']} runs "
              f"({noop['mutating_calls']} mutating)   target < 1 s, 0 mutating",
              f"poll cycle with {poll['jobs']} jobs in flight: {poll['per_cycle']:.1f} API calls "
              f"({poll['calls']} over {poll['cycles']} cycles)   target <= 2",
              "", "targets met" if ok else "TARGETS MISSED"]
    return "\n".join(lines), ok


def _submitted_lines(runs: dict[str, list[dict[str, float]]]) -> tuple[list[str], bool]:
    """The time-to-all-submitted rows: each against max(prep alone, raw upload) and against the orjson floor."""
    prep, upload, floor = (_median(runs[k], "wall") for k in ("prep", "upload", "floor"))
    bound = max(prep, upload)
    lines = ["", f"time to all submitted ({runs['submitted'][0]['jobs']:.0f} jobs, gemini, a separate emulator):",
             f"  {'prep alone':<22}{prep:>7.2f} s", f"  {'raw files.upload':<22}{upload:>7.2f} s",
             f"  {'orjson floor':<22}{floor:>7.2f} s"]
    ok = True
    for kind in ("submitted", "baseline"):
        if not runs[kind]:
            continue
        wall = _median(runs[kind], "wall")
        rss = max(x["rss_mb"] for x in runs[kind])
        if kind == "submitted":
            ok = (wall / bound <= TARGETS["submitted"] and wall / floor <= TARGETS["submitted_floor"]
                  and rss < TARGETS["rss_mb"])
        label = "batchflow run" if kind == "submitted" else "the baseline's run"
        prepared = _median(runs[kind], "prepared")
        lines.append(f"  {label:<22}{wall:>7.2f} s  {wall / bound:.2f}x max(prep, upload)  {wall / floor:.2f}x the "
                     f"floor  peak RSS {rss:.0f} MB   target <= 1.25x, <= 2.5x, < 200 MB")
        lines.append(f"  {'':<22}{prepared:>7.2f} s  when its preparation returned (with the units staged, where "
                     "that version stages while it prepares); the creates after it")
    return lines, ok


def _collected_lines(runs: dict[str, list[dict[str, float]]]) -> tuple[list[str], bool]:
    """The time-to-collected rows: batchflow's run (and the baseline's) against the raw download of the outputs, and
    against that download with each line then parsed (the least any reader of them does)."""
    download, parsed = _median(runs["download"], "downloaded"), _median(runs["download"], "wall")
    lines = ["", f"time to collected ({runs['download'][0]['jobs']:.0f} jobs' outputs, gemini, a separate emulator):",
             f"  {'raw files.download':<22}{download:>7.2f} s",
             f"  {'download, orjson parse':<22}{parsed:>7.2f} s  cpu {_median(runs['download'], 'cpu'):.2f} s  "
             f"peak RSS {max(x['rss_mb'] for x in runs['download']):.0f} MB"]
    ok = True
    for kind in ("collected", "baseline"):
        if not runs[kind]:
            continue
        wall, rss = _median(runs[kind], "wall"), max(x["rss_mb"] for x in runs[kind])
        if kind == "collected":
            ok = wall / parsed <= TARGETS["collected"] and rss < TARGETS["rss_mb"]
        label = "batchflow run" if kind == "collected" else "the baseline's run"
        lines.append(f"  {label:<22}{wall:>7.2f} s  cpu {_median(runs[kind], 'cpu'):.2f} s  {wall / download:.2f}x "
                     f"the raw download, {wall / parsed:.2f}x download and parse  peak RSS {rss:.0f} MB   target "
                     f"<= {TARGETS['collected']}x download and parse, < 200 MB")
    return lines, ok


def _api_only(bench: Bench, submitted: bool, collected: bool, baseline: Path | None, where: str) -> tuple[str, bool]:
    """``--submitted-only`` / ``--collected-only``: those cases alone, and whether their targets were met."""
    lines, ok = [f"batchflow bench: {bench.records:,} records, medians of {bench.repeat}", f"machine: {where}"], True
    for wanted, measure, key, rows in ((submitted, bench.submitted, "submitted", _submitted_lines),
                                       (collected, bench.collected, "collected", _collected_lines)):
        if wanted:
            measure(baseline)
            more, met = rows(bench.results[key])
            lines += more
            ok &= met
    return "\n".join(lines), ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--big", type=int, default=None, help="records for the second RSS point (5x; 0: none)")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions of each timed case (medians)")
    parser.add_argument("--quick", action="store_true", help="fewer records per no-op shard, fewer poll cycles")
    parser.add_argument("--naive", action="store_true", help="also time the json + Jinja2 script, once")
    parser.add_argument("--dir", type=Path, help="work directory (kept); default: a temporary one")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    parser.add_argument("--submitted-only", action="store_true", help="only the time to all submitted")
    parser.add_argument("--collected-only", action="store_true", help="only the time to collected")
    parser.add_argument("--baseline", type=Path,
                        help="a copy of another version of batchflow (the directory holding its package): its time "
                             "to all submitted and to collected are measured too, side by side")
    args = parser.parse_args(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))  # the API cases
    big = 5 * args.records if args.big is None else args.big
    with tempfile.TemporaryDirectory(prefix="batchflow-bench-") as tmp:
        work = args.dir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        bench = Bench(work, args.records, big, args.repeat, args.quick)
        started, where = time.perf_counter(), machine()
        if args.submitted_only or args.collected_only:
            text, ok = _api_only(bench, args.submitted_only, args.collected_only, args.baseline, where)
        else:
            bench.prep()
            bench.merge()
            bench.incremental()
            if args.naive:
                bench.naive()
            bench.big_rss()
            bench.api()
            bench.submitted(args.baseline)
            bench.collected(args.baseline)
            text, ok = report(bench.results, where)
    print(text + f"\n({time.perf_counter() - started:.0f} s in all; load average at the end "
                 f"{' '.join(f'{x:.1f}' for x in os.getloadavg())})")
    if args.json:
        args.json.write_text(json.dumps(bench.results, indent=1, default=str))
    return 0 if ok or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())
