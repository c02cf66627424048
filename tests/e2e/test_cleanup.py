"""``batchflow cleanup`` through the CLI against the emulator. Gemini backend: the media uploads and request
files a ``run --no-wait`` left go once their jobs are done, a running job's are kept, another spec's are never
touched, and nothing batchflow uploaded is left in the emulator's file store at the end. Vertex backend (and a GCS
emulator): a job's request lines and predictions go once its answers are collected, never before, the shared
media objects stay, and the runs after it find their kept answers in the state."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from conftest import genai_client
from support.helpers import cli, read_rows, write_spec
from support.media_files import png, wav

from batchflow.emulator import start_in_thread
from batchflow.spec.limits import INLINE_MAX_BYTES

PROMPT = ["Describe {{ name }}.", {"media": "{{ path }}"}]


class Clock:
    """The emulator's clock, moved by the test: a job finishes when the test says so."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def _uploaded(client: Any, spec: str) -> list[str]:
    """The display names of the files the spec's runs uploaded that the emulator still keeps."""
    return sorted(f.display_name or "" for f in client.files.list()
                  if f.source is not None and f.source.name == "UPLOADED"
                  and (f.display_name or "").startswith((f"batchflow-media-{spec}-", f"batchflow-{spec}-g")))


def _spec(root: Path, name: str, url: str, seed: int) -> Path:
    (root / name).mkdir()
    (root / name / "a.wav").write_bytes(wav(seed, seconds=INLINE_MAX_BYTES / 8000 + 1))  # uploaded, not inline
    return write_spec(root, name, key=None, prompt=PROMPT, backend={"type": "gemini", "base_url": url},
                      source={"type": "files", "path": f"{name}/*.wav", "format": "media"},
                      output={"type": "files", "path": f"out/{name}.jsonl"})


def _cleanup(*args: str) -> dict[str, Any]:
    result = cli("cleanup", "--json", *args)
    assert result.exit_code == 0, result.stderr
    found: dict[str, Any] = json.loads(result.stdout)
    return found


def test_cleanup_deletes_what_finished_jobs_read_and_keeps_a_running_jobs_files(tmp_path: Path) -> None:
    clock = Clock()
    with start_in_thread(tmp_path / "emu", job_seconds=10.0, clock=clock) as emulator:
        client = genai_client(emulator.base_url)
        done = _spec(tmp_path, "done", emulator.base_url, 1)
        busy = _spec(tmp_path, "busy", emulator.base_url, 2)
        assert cli("run", "--no-wait", str(done)).exit_code == 75
        clock.now += 60  # done's job has finished at the service; busy's is created after it and waits
        assert cli("run", "--no-wait", str(busy)).exit_code == 75
        left = _uploaded(client, "done")
        assert len(left) == 2 and len(_uploaded(client, "busy")) == 2  # each: its media and its request lines

        listed = _cleanup("--dry-run", str(done))
        assert sorted(d["kind"] for d in listed["deleted"]) == ["media", "request lines"]
        assert _uploaded(client, "done") == left  # a dry run deletes nothing

        assert len(_cleanup(str(done))["deleted"]) == 2
        assert _uploaded(client, "done") == []
        assert len(_uploaded(client, "busy")) == 2  # another spec's files are not this spec's to delete
        assert _cleanup(str(done)) == {"dry_run": False, "deleted": [], "kept": []}  # a second time: nothing

        kept = _cleanup(str(busy))
        assert kept["deleted"] == [] and len(kept["kept"]) == 2
        assert all("may still run" in k["why"] for k in kept["kept"])
        assert len(_uploaded(client, "busy")) == 2

        collected = cli("run", str(done))  # its inputs gone, its job is still collected: the output is the service's
        assert collected.exit_code == 0, collected.stderr
        assert [r["status"] for r in read_rows(tmp_path / "out/done.jsonl")] == ["ok"]

        clock.now += 60
        assert cli("run", str(busy)).exit_code == 0
        assert len(_cleanup(str(busy))["deleted"]) == 1  # the run deleted its media; its request lines were left
        assert [f.name for f in client.files.list() if f.source is not None and f.source.name == "UPLOADED"] == []


def _vertex_spec(root: Path, url: str, bucket: str) -> Path:
    (root / "scans").mkdir()
    for i in range(3):
        (root / "scans" / f"p{i}.png").write_bytes(png(i))
    backend = {"type": "vertex", "project": "p", "location": "us-central1", "staging": f"gs://{bucket}/staging",
               "base_url": url}
    return write_spec(root, "vclean", backend=backend, key=None, prompt=PROMPT,
                      source={"type": "files", "path": "scans/*.png", "format": "media"})


def _objects(fs: Any, prefix: str) -> list[str]:
    fs.invalidate_cache()
    return sorted(fs.find(prefix)) if fs.exists(prefix) else []


def test_cleanup_on_vertex_deletes_a_jobs_files_once_its_answers_are_collected_and_keeps_media(
        tmp_path: Path, fs: Any, bucket: str) -> None:
    clock = Clock()
    with start_in_thread(tmp_path / "emu", job_seconds=10.0, clock=clock) as emulator:
        spec = _vertex_spec(tmp_path, emulator.base_url, bucket)
        jobs, media = f"{bucket}/staging/vclean", f"{bucket}/staging/media"
        other = f"{bucket}/staging/vclean-2/batchflow-vclean-2-g1-s00000-j1-0123abcd/output/predictions.jsonl"
        fs.pipe(other, b"{}\n")  # another spec's, its name this one's and more: never this spec's to delete
        assert cli("run", "--no-wait", str(spec)).exit_code == 75
        staged_media = _objects(fs, media)
        assert len(staged_media) == 3

        running = _cleanup(str(spec))  # the job is pending: its request lines are what it reads
        assert running["deleted"] == [] and [k["kind"] for k in running["kept"]] == ["request lines"]
        assert "may still run and read it" in running["kept"][0]["why"]

        clock.now += 60  # done at the service, not yet collected: its predictions are the only copy of its answers
        finished = _cleanup(str(spec))
        assert [d["kind"] for d in finished["deleted"]] == ["request lines"]
        assert [(k["kind"], "not collected yet" in k["why"]) for k in finished["kept"]] == [("predictions", True)]
        assert _objects(fs, jobs) and all("/output/" in o for o in _objects(fs, jobs))

        collected = cli("run", str(spec))
        assert collected.exit_code == 0, collected.stderr
        rows = read_rows(tmp_path / "out/result.jsonl")
        assert [r["status"] for r in rows] == ["ok"] * 3

        listed = _cleanup("--dry-run", str(spec))
        assert [(d["kind"], d["bytes"] > 0) for d in listed["deleted"]] == [("predictions", True)]
        assert _objects(fs, jobs), "a dry run deletes nothing"
        assert len(_cleanup(str(spec))["deleted"]) == 1
        assert _objects(fs, jobs) == [] and _objects(fs, media) == staged_media  # media: other specs may read them
        assert _cleanup(str(spec)) == {"dry_run": False, "deleted": [], "kept": []}  # a second time: nothing
        assert _objects(fs, f"{bucket}/staging/vclean-2") == [other]

        creates = sum(emulator.engine.stats()["creates_by_display_name"].values())
        again = cli("run", str(spec))  # the answers are kept in the state: nothing is sent again
        assert again.exit_code == 0, again.stderr
        assert read_rows(tmp_path / "out/result.jsonl") == rows
        assert sum(emulator.engine.stats()["creates_by_display_name"].values()) == creates

        (tmp_path / "scans/p3.png").write_bytes(png(3))  # one record more: it alone is sent, the rest come kept
        assert cli("run", "--no-wait", str(spec)).exit_code == 75
        clock.now += 60
        grown = cli("run", str(spec))
        assert grown.exit_code == 0, grown.stderr
        assert sum(emulator.engine.stats()["creates_by_display_name"].values()) == creates + 1
        assert [(r["key"], r["status"]) for r in read_rows(tmp_path / "out/result.jsonl")] == \
            [(f"p{i}.png", "ok") for i in range(4)]
        assert [r["text"] for r in read_rows(tmp_path / "out/result.jsonl")][:3] == [r["text"] for r in rows]

        (tmp_path / ".batchflow").rename(tmp_path / "lost")  # a lost state: a run would adopt the job and collect it
        lost = _cleanup(str(spec))
        assert [d["kind"] for d in lost["deleted"]] == ["request lines"]
        assert [(k["kind"], "no state knows job" in k["why"]) for k in lost["kept"]] == [("predictions", True)]
