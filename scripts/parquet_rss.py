"""Parquet in and out at scale: the peak RSS and wall time of ``batchflow run`` on the local backend.

    python scripts/parquet_rss.py --records 1000000 2000000

For each size it writes a Parquet input of the benchmark's review records (``benchmarks.data``; pyarrow's
default row groups unless ``--row-group`` says otherwise), a spec with a Parquet source and a Parquet output on the
``local`` backend, and runs ``python -m batchflow run`` on it in a fresh process, end to end: read, render, shard,
the jobs on the embedded emulator (inside that process, so its memory counts too), collect, keep, merge and write.
Peak RSS is the run's own (``ru_maxrss`` of the child from ``wait4``; this script stays small, so what Linux
carries across ``exec`` is not what is reported). A second run of the finished spec is timed too (it does nothing).
The output's row count is checked against the input's.

The run is then taken apart, each part in a fresh process as ``benchmarks.bench`` measures it (``VmHWM``): the prep
(read the Parquet file, render, write the shards: ``bench_cases prep``) and the keep + merge (a finished state's
answers kept, the Parquet output written: ``bench_cases merge``). The jobs in between are the embedded emulator's
and google-genai's work, the same whatever the formats: ``--compare-jsonl`` runs the same records as JSON Lines in
and out for that baseline. No target is asserted: the figures are printed (and, with ``--json PATH``, written).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

_MAKE_INPUT = """
import sys
from pathlib import Path
import pyarrow.json as pj, pyarrow.parquet as pq
from benchmarks.data import write_records
jsonl, out, row_group = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]) or None
write_records(jsonl, int(sys.argv[4]))
pq.write_table(pj.read_json(jsonl), out, row_group_size=row_group)
jsonl.unlink()  # --compare-jsonl writes it again, the same records
"""


REPO = Path(__file__).resolve().parents[1]  # the benchmark's cases are run from the repository root

def make_input(directory: Path, records: int, row_group: int) -> Path:
    """A Parquet file of ``records`` review records, made in another process (so this one stays small)."""
    path = directory / "reviews.parquet"
    if not path.exists():
        subprocess.run([sys.executable, "-c", _MAKE_INPUT, str(directory / "reviews.jsonl"), str(path),
                        str(row_group), str(records)], check=True)
    return path


def write_spec(directory: Path, data: Path, fmt: str) -> Path:
    """A spec as a user would write it: ``fmt`` in and out, the local backend, jobs of the default size."""
    spec = directory / f"{fmt}-rss.yaml"
    spec.write_text(json.dumps({
        "version": 1, "name": f"{fmt}-rss", "backend": {"type": "local"}, "model": "gemini-2.5-flash",
        "source": {"type": "files", "path": str(data)}, "key": "{{ id }}",
        "prompt": "Classify the sentiment of this review as positive, negative or neutral.\nReview: {{ text }}",
        "generation_config": {"response_mime_type": "application/json", "response_schema": {
            "type": "object", "properties": {"sentiment": {"type": "string"}}}},
        "jobs": {"poll_interval": "1s"},
        "output": {"type": "files", "path": str(directory / f"out.{fmt}"), "parse": "json"},
    }))
    return spec


def run(spec: Path) -> dict[str, float]:
    """``batchflow run`` in a fresh process: wall seconds and the process's peak RSS in MB."""
    os.sync()
    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "batchflow", "--log-format", "json", "run", str(spec)],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    output = child.stdout.read().decode() if child.stdout else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"batchflow run {spec} failed: exit {os.waitstatus_to_exitcode(status)}\n{output}")
    return {"wall_s": round(wall, 2), "rss_mb": round(usage.ru_maxrss / 1024, 1)}


def phase(name: str, spec: Path) -> dict[str, float]:
    """One part of the run in a fresh process (``benchmarks.cases``): wall seconds and peak RSS in MB."""
    if name == "merge":  # a finished state to keep and merge: every job faked done, as the benchmark does
        subprocess.run([sys.executable, "-c", "import sys, pathlib; from benchmarks.cases import finish; "
                        "finish(pathlib.Path(sys.argv[1]))", str(spec)], check=True, capture_output=True, cwd=REPO)
    os.sync()
    out = subprocess.run([sys.executable, "-m", "benchmarks.cases", name, json.dumps({"spec": str(spec)})],
                         check=True, capture_output=True, text=True, cwd=REPO)
    found = json.loads(out.stdout.strip().splitlines()[-1])
    return {"wall_s": round(found["wall"], 2), "rss_mb": round(found["rss_mb"], 1)}


def measure(work: Path, records: int, row_group: int, compare: bool) -> dict[str, Any]:
    directory = work / f"n{records}"
    directory.mkdir(parents=True, exist_ok=True)
    data = make_input(directory, records, row_group)
    spec = write_spec(directory, data, "parquet")
    result: dict[str, Any] = {"records": records, "run": run(spec), "second_run": run(spec)}
    import pyarrow.parquet as pq  # after the runs: this process stays small while it waits for them

    meta_in, meta_out = pq.ParquetFile(data).metadata, pq.ParquetFile(directory / "out.parquet").metadata
    if meta_out.num_rows != meta_in.num_rows:
        raise SystemExit(f"{records:,} records in, {meta_out.num_rows:,} rows out")
    result.update(input_mb=round(data.stat().st_size / 1e6, 1), input_row_groups=meta_in.num_row_groups,
                  output_mb=round((directory / "out.parquet").stat().st_size / 1e6, 1),
                  output_row_groups=meta_out.num_row_groups, prep=phase("prep", spec), merge=phase("merge", spec))
    if compare:
        result["jsonl"] = _jsonl_twin(directory, records)
    return result


def _jsonl_twin(directory: Path, records: int) -> dict[str, Any]:
    """The same records (the same seed) and spec as JSON Lines in and out: the run's figures without Parquet."""
    jsonl = directory / "reviews.jsonl"
    subprocess.run([sys.executable, "-c", "import sys, pathlib; from benchmarks.data import write_records; "
                    "write_records(pathlib.Path(sys.argv[1]), int(sys.argv[2]))", str(jsonl), str(records)],
                   check=True)
    spec = write_spec(directory, jsonl, "jsonl")
    return {"run": run(spec), "prep": phase("prep", spec), "merge": phase("merge", spec)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--row-group", type=int, default=0, help="rows per input row group (0: pyarrow's default)")
    parser.add_argument("--compare-jsonl", action="store_true", help="also run the same records as JSON Lines")
    parser.add_argument("--work", type=Path, help="where the inputs and states go (default: a temporary directory)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="parquet-rss-") as scratch:
        work = args.work or Path(scratch)
        results = [measure(work, n, args.row_group, args.compare_jsonl) for n in args.records]
    for r in results:
        print(f"{r['records']:,} records ({r['input_mb']} MB in {r['input_row_groups']} row group(s), "
              f"{r['output_mb']} MB out in {r['output_row_groups']}):")
        _print("parquet", r)
        if "jsonl" in r:
            _print("jsonl  ", r["jsonl"])
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


def _print(label: str, r: dict[str, Any]) -> None:
    parts = [f"run {r['run']['wall_s']} s, {r['run']['rss_mb']} MB"]
    if "second_run" in r:
        parts.append(f"second run {r['second_run']['wall_s']} s")
    parts += [f"{name} {r[name]['wall_s']} s, {r[name]['rss_mb']} MB" for name in ("prep", "merge")]
    print(f"  {label}: " + "; ".join(parts) + " (peak RSS)")


if __name__ == "__main__":
    main()
