"""``batchflow cleanup`` through the CLI against the emulator (gemini backend): the media uploads and request
files a ``run --no-wait`` left go once their jobs are done, a running job's are kept, another spec's are never
touched, and nothing batchflow uploaded is left in the emulator's file store at the end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from conftest import genai_client
from support.helpers import cli, read_rows, write_spec
from support.media_files import wav

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
