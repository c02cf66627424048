"""``python -m benchmarks.embed_jobs --records 1200000``: how many Vertex jobs an embedding corpus is cut into.

It writes ``--records`` short texts, prepares (read -> render -> key -> shard files, offline: nothing staged or
created) one ``task: embed`` spec on the vertex backend per model, with no ``jobs.max_requests`` (each model's
default), and prints the jobs and the prep's wall time. A Gemini embedding job takes 1,000,000 rows on Vertex, so
1,200,000 texts are 2 jobs on gemini-embedding-001 and gemini-embedding-2, and 40 on the legacy text-embedding-005
(30,000 a job). ``--check`` makes the exit status say whether those counts came out.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import orjson
import yaml

from batchflow.prepare.prepare import prepare
from batchflow.spec.spec import load_spec

_MODELS = {"gemini-embedding-001": ("us-central1", 1_000_000), "gemini-embedding-2": ("us", 1_000_000),
           "text-embedding-005": ("us-central1", 30_000)}


def _texts(path: Path, records: int) -> None:
    with open(path, "wb") as fh:
        for i in range(records):
            fh.write(orjson.dumps({"id": i, "text": f"short text number {i}"}) + b"\n")


def _spec(directory: Path, model: str, location: str) -> Path:
    spec = {"version": 1, "name": model.replace(".", "-"), "model": model, "task": "embed",
            "backend": {"type": "vertex", "project": "p", "location": location, "staging": "gs://bench/staging"},
            "source": {"type": "files", "path": "texts.jsonl"}, "key": "{{ id }}", "content": "{{ text }}",
            "embed_config": {"output_dimensionality": 768, "task_type": "RETRIEVAL_DOCUMENT"},
            "output": {"type": "files", "path": f"out/{model}.jsonl"}}
    path = directory / f"{model}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_200_000)
    parser.add_argument("--check", action="store_true", help="exit 1 unless every model's job count is as expected")
    args = parser.parse_args(argv)
    ok = True
    with tempfile.TemporaryDirectory(prefix="bench-embed-") as scratch:
        directory = Path(scratch)
        _texts(directory / "texts.jsonl", args.records)
        for model, (location, per_job) in _MODELS.items():
            spec = load_spec(_spec(directory, model, location))
            start = time.perf_counter()
            state = prepare(spec, directory / f"state-{model}", 1, None)
            took = time.perf_counter() - start
            expected = math.ceil(args.records / per_job)
            ok &= len(state.shards) == expected
            print(f"{model:24} {args.records:>10,} texts -> {len(state.shards):>3} jobs (expected {expected}) "
                  f"in {took:6.1f} s")
    return 0 if ok or not args.check else 1


if __name__ == "__main__":
    raise SystemExit(main())
