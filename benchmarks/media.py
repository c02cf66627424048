"""``python -m benchmarks.media --files 10000``: a folder of small images to all jobs submitted, against copying it.

It writes ``--files`` distinct PNGs of about ``--kb`` KB each, starts ``batchflow emulator`` (jobs that stay
running, so nothing is collected), and times, side by side in one run:

- **copy**: ``shutil.copyfile`` of every file into a fresh directory (the floor: reading and writing the bytes once);
- **submit**: ``batchflow run --no-wait`` of a ``format: media`` spec on the gemini backend at the emulator: every
  file read and hashed, one record and one request per file, each file uploaded through the Files API (over the
  inline threshold), the unit staged and its job created.

It prints both wall times, their ratio and the peak RSS of the run. Run it from the repository's root.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import yaml

from batchflow.spec.limits import INLINE_MAX_BYTES


def png(seed: int, kb: int) -> bytes:
    """A valid PNG of about ``kb`` KB that does not compress (its pixels are a seeded byte stream)."""
    side = max(8, int((kb * 1024) ** 0.5))
    noise = random.Random(seed).randbytes(side * side)
    stream = b"".join(b"\0" + noise[y * side:(y + 1) * side] for y in range(side))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(stream, 1))
            + chunk(b"IEND", b""))


def _folder(root: Path, files: int, kb: int) -> int:
    root.mkdir(parents=True)
    total = 0
    for i in range(files):
        data = png(i, kb)
        (root / f"img-{i:06d}.png").write_bytes(data)
        total += len(data)
    return total


def _spec(directory: Path, base_url: str) -> Path:
    spec = {"version": 1, "name": "bench-media", "model": "gemini-2.5-flash",
            "backend": {"type": "gemini", "base_url": base_url},
            "source": {"type": "files", "path": "images/*.png", "format": "media"},
            "prompt": ["Describe {{ name }}.", {"media": "{{ path }}"}],
            "jobs": {"max_concurrent": 100}, "output": {"type": "files", "path": "out/result.jsonl"}}
    path = directory / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def _emulator(data_dir: Path) -> tuple[subprocess.Popen[str], str]:
    """``batchflow emulator`` whose jobs run for an hour: the run submits and leaves them."""
    process = subprocess.Popen([sys.executable, "-m", "batchflow", "emulator", "--host", "127.0.0.1", "--port", "0",
                                "--data-dir", str(data_dir), "--job-seconds", "3600"],
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    return process, process.stdout.readline().strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--kb", type=int, default=50)
    args = parser.parse_args(argv)
    if args.kb * 1024 <= INLINE_MAX_BYTES:
        print(f"note: {args.kb} KB files go inline (threshold {INLINE_MAX_BYTES:,} bytes), not through uploads")
    with tempfile.TemporaryDirectory(prefix="bench-media-") as scratch:
        directory = Path(scratch)
        total = _folder(directory / "images", args.files, args.kb)
        start = time.perf_counter()
        (directory / "copy").mkdir()
        for path in (directory / "images").iterdir():
            shutil.copyfile(path, directory / "copy" / path.name)
        copy = time.perf_counter() - start
        emulator, base_url = _emulator(directory / "emulator")
        try:
            spec = _spec(directory, base_url)
            start = time.perf_counter()
            run = subprocess.run([sys.executable, "-m", "batchflow", "--log-format", "json", "run", "--no-wait",
                                  str(spec)], capture_output=True, text=True, env={**os.environ})
            submit = time.perf_counter() - start
        finally:
            emulator.terminate()
            emulator.wait(timeout=30)
        uploads = run.stderr.count('"event": "media uploaded"')
        rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(f"{args.files:,} PNGs, {total / 1e6:,.1f} MB: copy {copy:.2f} s; run --no-wait to all submitted "
              f"{submit:.2f} s (exit {run.returncode}, {uploads:,} uploads) = {submit / copy:,.0f}x the copy; "
              f"peak RSS of a child {rss:,.0f} MB")
        return 0 if run.returncode in (0, 75) else 1


if __name__ == "__main__":
    raise SystemExit(main())
