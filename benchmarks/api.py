"""The benchmark's API cases, against an emulator whose ``/_emulator/stats`` counts every call by endpoint.

- ``noop_rerun``: a spec of 100 shards run to the end, then run again: the second run's wall time (as a user
  runs it, ``python -m batchflow run``, interpreter start included; and in-process) and the calls it makes.
- ``poll_cycle``: 50 jobs in flight (the emulator keeps them running): the calls of each poll cycle.
- ``separate_emulator``, ``empty``, ``created``: the emulator the time-to-all-submitted case runs against;
  ``finished_outputs``, ``downloads``: the jobs and downloads there of the time-to-collected case.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from batchflow.emulator import start_in_thread
from batchflow.execute.runner import NotFinished, Runner
from batchflow.state.state import state_store
from benchmarks import data as bench_data
from benchmarks.cases import genai_client, outputs

_READS = (".get", ".list", ".download")  # endpoints that change nothing


def _stats(url: str) -> Counter[str]:
    calls = httpx.get(f"{url}/_emulator/stats").json()["calls_by_endpoint"]
    return Counter({k: v for k, v in calls.items() if k != "emulator.stats"})


def _mutating(calls: Counter[str]) -> int:
    return sum(n for endpoint, n in calls.items() if not endpoint.endswith(_READS))


def _spec(work: Path, name: str, url: str, shards: int, per_shard: int, **jobs: Any) -> Path:
    data = work / f"{name}.jsonl"
    bench_data.write_records(data, shards * per_shard)
    return bench_data.write_spec(work, name, data, "prompt", backend={"type": "gemini", "base_url": url},
                                 jobs={"max_requests": per_shard, "poll_interval": "0.05s", **jobs})


def noop_rerun(work: Path, shards: int = 100, per_shard: int = 20, repeat: int = 3) -> dict[str, Any]:
    """Run a 100-shard spec to the end, then time runs of the finished spec and count their calls."""
    with start_in_thread(work / "emulator-noop", job_seconds=0.0) as emulator:
        path = _spec(work, "noop", emulator.base_url, shards, per_shard, max_concurrent=shards)
        Runner(bench_data.load(path)).run()
        before = _stats(emulator.base_url)
        env = {**os.environ, "GEMINI_API_KEY": "unused"}
        cli, inproc = [], []
        for _ in range(repeat):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "batchflow", "--log-format", "json", "run", str(path)],
                           check=True, capture_output=True, env=env)
            cli.append(time.perf_counter() - start)
            start = time.perf_counter()
            Runner(bench_data.load(path)).run()
            inproc.append(time.perf_counter() - start)
        calls = _stats(emulator.base_url) - before
    return {"shards": shards, "cli_s": statistics.median(cli), "in_process_s": statistics.median(inproc),
            "calls": sum(calls.values()), "mutating_calls": _mutating(calls), "runs": 2 * repeat}


class _Stop(Exception):
    pass


def poll_cycle(work: Path, jobs: int = 50, cycles: int = 5) -> dict[str, Any]:
    """Submit ``jobs`` jobs that stay running, then count the calls of ``cycles`` poll cycles of ``run``."""
    with start_in_thread(work / "emulator-poll", job_seconds=3600.0) as emulator:
        path = _spec(work, "poll", emulator.base_url, jobs, 5, max_concurrent=jobs)
        with contextlib.suppress(NotFinished):  # it stages and submits every job, then exits 75
            Runner(bench_data.load(path)).run(wait=False)
        before = _stats(emulator.base_url)
        slept = 0

        def sleep(_seconds: float) -> None:
            nonlocal slept
            slept += 1
            if slept == cycles:
                raise _Stop

        with contextlib.suppress(_Stop):
            Runner(bench_data.load(path), sleep=sleep).run()
        calls = _stats(emulator.base_url) - before
    return {"jobs": jobs, "cycles": slept, "calls": dict(calls),
            "per_cycle": sum(calls.values()) / slept, "mutating_calls": _mutating(calls)}


@contextlib.contextmanager
def separate_emulator(data_dir: Path, job_seconds: float = 3600.0) -> Iterator[str]:
    """``batchflow emulator`` in a process of its own (as a user runs one), each job ending ``job_seconds`` after
    its create (pending for an hour by default): its URL."""
    shutil.rmtree(data_dir, ignore_errors=True)
    proc = subprocess.Popen([sys.executable, "-m", "batchflow", "emulator", "--host", "127.0.0.1", "--port", "0",
                             "--data-dir", str(data_dir), "--job-seconds", str(job_seconds)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        yield proc.stdout.readline().split()[0]
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(data_dir, ignore_errors=True)


def empty(url: str) -> None:
    """Delete every batch and file of the emulator (each case uploads the whole input: a GB or so at 1M)."""
    from google.genai import types

    client = genai_client(url)
    for job in list(client.batches.list(config=types.ListBatchJobsConfig(page_size=100))):
        client.batches.delete(name=str(job.name))
    for f in list(client.files.list(config=types.ListFilesConfig(page_size=100))):
        client.files.delete(name=str(f.name))


def created(url: str, spec_name: str) -> int:
    """Jobs the emulator has created under a spec's display names."""
    made = httpx.get(f"{url}/_emulator/stats").json()["creates_by_display_name"]
    return sum(n for name, n in made.items() if name.startswith(f"batchflow-{spec_name}-"))


def finished_outputs(url: str, spec_name: str, timeout: float = 600.0) -> list[str]:
    """Wait until every job of a spec has SUCCEEDED with its output file; their names."""
    client, deadline = genai_client(url), time.monotonic() + timeout
    while (names := outputs(client, spec_name)) is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the jobs of {spec_name} did not all succeed within {timeout:.0f} s")
        time.sleep(0.2)
    return names


def downloads(url: str) -> int:
    """``files.download`` calls the emulator has answered."""
    return int(_stats(url)["files.download"])


def shard_dir(spec: Path) -> Path:
    """Where the prep case leaves a spec's shard files (gen-1)."""
    return state_store(bench_data.load(spec)).dir / "gen-1" / "shards"
