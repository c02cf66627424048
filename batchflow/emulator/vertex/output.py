"""A Vertex job's predictions after its lines are answered: kept on local disk while the fault plan defers them
(late output, or a cancel that delivers the finished lines), then published to, or later deleted from, GCS."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from batchflow.emulator.vertex.execute import filesystem, upload


def kept_parts(work: Path, job_id: str) -> list[Path]:
    """A deferred job's prediction files, waiting on local disk."""
    return sorted(work.glob(f"{job_id}.part*.jsonl"))


def publish(parts: list[Path], output_dir: str) -> None:
    """Upload a deferred job's prediction files to its output directory, then forget the local copies."""
    upload(filesystem(), parts, output_dir)
    for part in parts:
        part.unlink(missing_ok=True)


def remove_output(output_dir: str) -> None:
    """Delete a job's prediction files, as the bucket's retention would."""
    fs = filesystem()
    fs.invalidate_cache()
    for path in fs.glob(output_dir.removeprefix("gs://").rstrip("/") + "/predictions*.jsonl"):
        fs.rm(path)


def keep_finished(parts: list[Path], finished: Callable[[str], bool]) -> tuple[int, int]:
    """Cut deferred prediction files down to the lines `finished` accepts (by `line_identity`); (succeeded,
    failed) among them."""
    ok = failed = 0
    for part in parts:
        kept = part.with_suffix(".finished")
        with open(part, "rb") as src, open(kept, "wb") as out:
            for raw in src:
                line = orjson.loads(raw)
                if finished(line_identity(line)):
                    out.write(raw)
                    good = line.get("status") == ""
                    ok, failed = ok + good, failed + (not good)
        os.replace(kept, part)
    return ok, failed


def line_identity(line: dict[str, Any]) -> str:
    """What a finished output line is drawn by: its labels, else what it echoes (its position is shuffled)."""
    request = line.get("request")
    labels = request.get("labels") if isinstance(request, dict) else None
    if isinstance(labels, dict) and labels:
        return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
    return orjson.dumps(request if request is not None else line.get("instance"), option=orjson.OPT_SORT_KEYS).decode()
