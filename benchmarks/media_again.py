"""``python -m benchmarks.media_again --files 2000``: a finished media spec run again, with nothing changed and with
one file touched.

It writes ``--files`` distinct PNGs (``benchmarks.media``'s, about ``--kb`` KB each) and a manifest naming them, and
runs a ``gemini-embedding-2`` spec of a caption and the image (``content:`` as a list of parts) on the ``local``
backend to the end. Then it times, each a fresh ``batchflow run``:

- **again**: nothing changed: the run stats the files its generation read (``gen-N/media-files``) and renders
  nothing;
- **touched**: one file's mtime moved, its bytes the same: every record rendered again (each file read, sniffed and
  hashed), nothing sent.

It prints the wall time of each. Run it from the repository's root.
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

import yaml

from benchmarks.media import png


def _spec(directory: Path) -> Path:
    spec = {"version": 1, "name": "bench-media-again", "model": "gemini-embedding-2", "task": "embed",
            "key": "{{ id }}", "source": {"type": "files", "path": "manifest.jsonl"},
            "content": ["A photo: {{ caption }}", {"media": "{{ file }}"}],
            "embed_config": {"output_dimensionality": 128}, "jobs": {"poll_interval": "0.5s"},
            "output": {"type": "files", "path": "out/vectors.jsonl", "include_record": False}}
    path = directory / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def _run(spec: Path) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "batchflow", "--log-format", "json", "run", str(spec)],
                          capture_output=True, text=True, env={**os.environ})
    if done.returncode != 0:
        raise SystemExit(f"run failed ({done.returncode}): {done.stderr[-2000:]}")
    return time.perf_counter() - start, done.stderr


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2_000)
    parser.add_argument("--kb", type=int, default=50)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-media-again-") as scratch:
        directory = Path(scratch)
        (directory / "images").mkdir()
        with open(directory / "manifest.jsonl", "w", encoding="utf-8") as manifest:
            for i in range(args.files):
                (directory / "images" / f"img-{i:06d}.png").write_bytes(png(i, args.kb))
                manifest.write(json.dumps({"id": i, "file": f"images/img-{i:06d}.png", "caption": "on a shelf"})
                               + "\n")
        spec = _spec(directory)
        first, _ = _run(spec)
        again, logs = _run(spec)
        rendered = '"event": "prepared"' in logs
        (directory / "images/img-000000.png").touch()
        touched, logs = _run(spec)
        sent = logs.count('"event": "job submitted"')
        print(f"{args.files:,} PNGs of ~{args.kb} KB, gemini-embedding-2 on local: first run {first:.2f} s; "
              f"again, nothing changed {again:.2f} s ({'rendered' if rendered else 'nothing rendered'}); "
              f"one file touched {touched:.2f} s ({sent} jobs submitted)")
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
