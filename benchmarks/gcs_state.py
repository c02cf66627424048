"""What a gs:// state moves to and from GCS, run by run: a first run, then 1 % of records appended, then unchanged,
then unchanged again on a machine with no cache, then 1 % more appended (the first generation's objects, retired
by the second, are deleted).

The state lives on fake-gcs-server (it checks generation preconditions as GCS does) behind a byte-counting proxy
(``tests/support/stall_proxy.py``); the jobs go to batchflow's emulator, so the proxy sees only the state's own
traffic. Each run is ``Runner.run()`` in this process, as ``batchflow run`` would do it. Besides the bytes up and
down, each run's new objects are counted by the kind of file they hold, to show where the bytes go.

    python -m benchmarks.gcs_state --records 1000000            # ~15 min on the shared 2-core machine
    python -m benchmarks.gcs_state --records 20000 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from batchflow.emulator import start_in_thread
from batchflow.execute.runner import Runner
from benchmarks import data as bench_data

_TESTS = Path(__file__).resolve().parent.parent / "tests"
_KINDS = (("state.json", r"state\.json$"), ("lease", r"lease\.json$"), ("index", r"/answers/index/"),
          ("answers", r"/answers/part-\d+\.jsonl$"), ("digests", r"\.digests$"),
          ("requests", r"/shards/shard-\d+\.jsonl$"), ("records", r"\.manifest\.jsonl$"),
          ("units", r"/units/"), ("results", r"/results/"), ("carried", r"/carried/"), ("marks", r"/marks$"))


def kind_of(rel: str) -> str:
    return next((kind for kind, pattern in _KINDS if re.search(pattern, rel)), "other")


class Bench:
    def __init__(self, work: Path, records: int, per_job: int | None = None) -> None:
        sys.path.insert(0, str(_TESTS))
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage  # type: ignore[attr-defined]
        from support.gcs import start_fake_gcs_server
        from support.stall_proxy import StallProxy

        self.work, self.records = work, records
        self.server = start_fake_gcs_server(work / "gcs")
        self.proxy = StallProxy(self.server.url)
        os.environ.update({"STORAGE_EMULATOR_HOST": self.proxy.url, "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
                           "GEMINI_API_KEY": "unused"})
        client = storage.Client(project="bench", credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
                                client_options={"api_endpoint": self.server.url})
        self.bucket = client.create_bucket("bench")
        self.emulator = start_in_thread(work / "emulator", job_seconds=0.0)
        self.data = work / "in.jsonl"
        self.input_bytes = bench_data.write_records(self.data, records)
        self.grown = records
        self.spec = bench_data.write_spec(work, "gcs", self.data, "prompt",
                                          backend={"type": "gemini", "base_url": self.emulator.base_url},
                                          state={"dir": "gs://bench/state"},
                                          jobs={"poll_interval": "0.05s", "max_concurrent": 100,
                                                **({"max_requests": per_job} if per_job else {})})

    def close(self) -> None:
        self.emulator.stop()
        self.proxy.close()
        self.server.stop()

    def _objects(self) -> dict[str, tuple[int, int]]:
        return {b.name: (int(b.generation), int(b.size or 0)) for b in self.bucket.list_blobs(prefix="state/")}

    def _names(self) -> dict[str, str]:
        """object name -> the state file it holds (a content-addressed object: by the manifest)."""
        blob = self.bucket.get_blob("state/gcs/state.json")
        body = json.loads(blob.download_as_bytes()) if blob is not None else {}
        return {f"state/gcs/objects/{entry[0]}": rel for rel, entry in body.get("files", {}).items()}

    def run(self, label: str, cache: str) -> dict[str, Any]:
        os.environ["XDG_CACHE_HOME"] = str(self.work / cache)
        before, (up0, down0) = self._objects(), self.proxy.counted()
        start = time.perf_counter()
        summary = Runner(bench_data.load(self.spec)).run()
        seconds = time.perf_counter() - start
        up, down = (a - b for a, b in zip(self.proxy.counted(), (up0, down0), strict=True))
        after, names = self._objects(), self._names()
        kinds: Counter[str] = Counter()
        for name, (generation, size) in after.items():
            if before.get(name, (0, 0))[0] != generation:
                kinds[kind_of(names.get(name, name))] += size
        row = {"run": label, "seconds": round(seconds, 1), "up": up, "down": down,
               "objects": len(after), "stored": sum(size for _, size in after.values()),
               "new_by_kind": dict(kinds.most_common()), "jobs": summary.jobs}
        print(json.dumps(row), flush=True)
        return row

    def append(self, fraction: float) -> int:
        """``fraction`` of the first run's records appended: the input regenerated one record longer each."""
        extra = max(1, int(self.records * fraction))
        self.grown += extra
        grown = self.work / "grown.jsonl"
        bench_data.write_records(grown, self.grown)
        shutil.move(grown, self.data)
        return extra


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=20000)
    ap.add_argument("--per-job", type=int, help="jobs.max_requests (the default: the spec's, 30,000)")
    ap.add_argument("--json", type=Path, help="write the figures here too")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-gcs-"))
    bench = Bench(work, args.records, args.per_job)
    try:
        rows = [bench.run("first", "cache-a")]
        appended = bench.append(0.01)
        rows.append(bench.run(f"{appended} appended", "cache-a"))
        rows.append(bench.run("unchanged", "cache-a"))
        rows.append(bench.run("unchanged, cold cache", "cache-b"))
        appended = bench.append(0.01)
        rows.append(bench.run(f"{appended} more appended", "cache-a"))  # the first generation's objects go
    finally:
        bench.close()
        shutil.rmtree(work, ignore_errors=True)
    result = {"records": args.records, "input_bytes": bench.input_bytes, "runs": rows}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2), encoding="utf-8")
    return result


if __name__ == "__main__":
    main()
