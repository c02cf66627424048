"""A folder of media files, end to end on the local backend: one row per file, identical files uploaded once, a
second run sends nothing, a changed file is one request; a manifest's missing and refused files are error rows."""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import genai_client
from support.emulator_helpers import http_json, wait_done
from support.helpers import cli, read_rows, write_jsonl, write_spec
from support.media_files import jpeg, pdf, png, wav

from batchflow.emulator import start_in_thread
from batchflow.spec.limits import INLINE_MAX_BYTES

PROMPT = ["Describe {{ name }}.", {"media": "{{ path }}"}]


def _folder(root: Path) -> dict[str, bytes]:
    """52 files of four kinds, every fourth PNG a copy of another, two WAVs over the inline threshold (the same)."""
    files: dict[str, bytes] = {}
    for i in range(48):
        kind = i % 4
        name, data = [(f"img/p{i}.png", png(i // 8)), (f"img/j{i}.jpg", jpeg(i)), (f"doc/d{i}.pdf", pdf(i)),
                      (f"audio/w{i}.wav", wav(i, seconds=0.5))][kind]
        files[name] = data
    big = wav(7, seconds=INLINE_MAX_BYTES / 8000 + 1)
    files.update({"audio/long-a.wav": big, "audio/long-b.wav": big, "img/x.png": png(100), "doc/y.pdf": pdf(100)})
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return files


def _named(data: bytes, mime: str) -> str:
    """How the emulator's model names a media part it read."""
    return f"[{mime} {hashlib.sha256(data).hexdigest()[:12]} {len(data)} bytes]"


def _assert_each_answer_names_its_file(rows: list[dict[str, Any]], root: Path) -> None:
    for r in rows:
        data = (root / r["key"]).read_bytes()
        assert r["text"].endswith(_named(data, r["record"]["mime_type"])), (r["key"], r["text"])


def _events(stderr: str, event: str) -> list[dict[str, object]]:
    found = []
    for line in stderr.splitlines():
        if line.startswith("{") and f'"event": "{event}"' in line:
            found.append(json.loads(line))
    return found


def test_a_folder_of_media_runs_again_and_sends_only_what_changed(tmp_path: Path) -> None:
    files = _folder(tmp_path / "scans")
    spec = write_spec(tmp_path, "media", key=None, prompt=PROMPT,
                      source={"type": "files", "path": "scans/**/*.*", "format": "media"})
    first = cli("run", str(spec))
    assert first.exit_code == 0, first.stderr
    rows = read_rows(tmp_path / "out/result.jsonl")
    assert sorted(r["key"] for r in rows) == sorted(files)
    assert all(r["status"] == "ok" for r in rows)
    assert {r["key"]: r["record"]["size_bytes"] for r in rows} == {k: len(v) for k, v in files.items()}
    _assert_each_answer_names_its_file(rows, tmp_path / "scans")

    again = cli("run", str(spec))
    assert again.exit_code == 0, again.stderr
    assert not _events(again.stderr, "job submitted")  # nothing sent

    (tmp_path / "scans/img/x.png").write_bytes(png(101))
    changed = cli("run", str(spec))
    assert changed.exit_code == 0, changed.stderr
    prepared = _events(changed.stderr, "prepared")[-1]
    assert (prepared.get("changed"), prepared.get("unchanged")) == (1, len(files) - 1)
    rows = read_rows(tmp_path / "out/result.jsonl")
    assert len(rows) == len(files)
    _assert_each_answer_names_its_file(rows, tmp_path / "scans")


def test_a_folder_on_the_gemini_backend_uploads_each_large_content_once(tmp_path: Path, emulator_url: str) -> None:
    files = _folder(tmp_path / "scans")
    spec = write_spec(tmp_path, "media-gemini", key=None, prompt=PROMPT,
                      backend={"type": "gemini", "base_url": emulator_url},
                      source={"type": "files", "path": "scans/**/*.*", "format": "media"})
    result = cli("run", str(spec))
    assert result.exit_code == 0, result.stderr
    rows = read_rows(tmp_path / "out/result.jsonl")
    assert len(rows) == len(files) and all(r["status"] == "ok" for r in rows)
    _assert_each_answer_names_its_file(rows, tmp_path / "scans")
    large = {hashlib.sha256(v).hexdigest() for v in files.values() if len(v) > INLINE_MAX_BYTES}
    uploaded = [e["sha256"] for e in _events(result.stderr, "media uploaded")]
    assert len(large) == 1 and uploaded == list(large)  # the two identical long WAVs: one upload
    client = genai_client(emulator_url)  # held: the SDK closes its HTTP client when the Client object goes
    assert not [f for f in client.files.list() if (f.display_name or "").startswith("batchflow-media-media-gemini-")]


def test_a_manifest_with_a_missing_file_and_a_refused_type_gets_two_error_rows(tmp_path: Path) -> None:
    (tmp_path / "files").mkdir()
    (tmp_path / "files/a.png").write_bytes(png(1))
    (tmp_path / "files/b.pdf").write_bytes(pdf(1))
    (tmp_path / "files/page.html").write_text("<html><body>hi</body></html>")
    manifest = "id,file\n1,files/a.png\n2,files/gone.png\n3,files/page.html\n4,files/b.pdf\n"
    (tmp_path / "data").mkdir()
    (tmp_path / "data/manifest.csv").write_text(manifest)
    spec = write_spec(tmp_path, "manifest", prompt=["What is in it?", {"media": "files/{{ file[6:] }}"}],
                      source={"type": "files", "path": "data/manifest.csv", "on_bad_record": "skip"},
                      output={"type": "files", "path": "out/result.jsonl", "max_failed": 2})
    result = cli("run", str(spec))
    assert result.exit_code == 0, result.stderr
    rows = {r["key"]: r for r in read_rows(tmp_path / "out/result.jsonl")}
    assert [rows[k]["status"] for k in "1234"] == ["ok", "error", "error", "ok"]
    assert "no such file" in rows["2"]["error"]["message"] and "gone.png" in rows["2"]["error"]["message"]
    assert "text/html is not one the model takes" in rows["3"]["error"]["message"]


def test_a_file_changed_under_an_unchanged_manifest_is_sent_again(tmp_path: Path) -> None:
    """The manifest's bytes and stat stay the same; the file one record names does not: that record is sent
    again (the run does not stop at the unchanged input, nor carry the record by its unchanged bytes)."""
    (tmp_path / "files").mkdir()
    for name in ("a", "b"):
        (tmp_path / f"files/{name}.png").write_bytes(png(1 if name == "a" else 2))
    write_jsonl(tmp_path / "data/in.jsonl", [{"id": n, "file": f"files/{n}.png"} for n in ("a", "b")])
    spec = write_spec(tmp_path, "manifest-again", prompt=["What is in it?", {"media": "{{ file }}"}])
    assert cli("run", str(spec)).exit_code == 0
    again = cli("run", str(spec)).stderr
    assert not _events(again, "job created") and not _events(again, "prepared"), "its files stat-ed, not read"
    (tmp_path / "files/a.png").write_bytes(png(3))  # same size, same manifest
    planned = cli("plan", str(spec))
    assert "0 new, 1 changed, 1 unchanged" in planned.stdout, planned.stdout
    changed = cli("run", str(spec))
    assert changed.exit_code == 0, changed.stderr
    assert [e["requests"] for e in _events(changed.stderr, "job submitted")] == [1]
    rows = {r["key"]: r for r in read_rows(tmp_path / "out/result.jsonl")}
    assert rows["a"]["text"].endswith(_named(png(3), "image/png"))
    assert rows["b"]["text"].endswith(_named(png(2), "image/png"))


def test_a_missing_file_that_appears_is_sent_on_the_next_run(tmp_path: Path) -> None:
    (tmp_path / "files").mkdir()
    (tmp_path / "files/a.png").write_bytes(png(1))
    write_jsonl(tmp_path / "data/in.jsonl", [{"id": n, "file": f"files/{n}.png"} for n in ("a", "b")])
    spec = write_spec(tmp_path, "appears", prompt=["What is in it?", {"media": "{{ file }}"}],
                      source={"type": "files", "path": "data/in.jsonl", "on_bad_record": "skip"},
                      output={"type": "files", "path": "out/result.jsonl", "max_failed": 1})
    assert cli("run", str(spec)).exit_code == 0
    assert [r["status"] for r in read_rows(tmp_path / "out/result.jsonl")] == ["ok", "error"]
    (tmp_path / "files/b.png").write_bytes(png(2))
    later = cli("run", str(spec))
    assert [e["requests"] for e in _events(later.stderr, "job submitted")] == [1]
    assert [r["status"] for r in read_rows(tmp_path / "out/result.jsonl")] == ["ok", "ok"]


def _media_files(client: Any) -> list[Any]:
    """The live Files API files batchflow uploaded for media."""
    return [f for f in client.files.list() if (f.display_name or "").startswith("batchflow-media-")]


@pytest.mark.parametrize(("aged_hours", "uploads"), [(0, 0), (30, 1), (49, 1)])
def test_an_upload_is_reused_only_while_it_will_outlive_the_job(tmp_path: Path, aged_hours: int,
                                                                uploads: int) -> None:
    """A first run leaves its job running (--no-wait); before the next run a new record names the same long WAV.
    Its upload is reused while fresh, uploaded again with less than a day to live (30 h old) or once the Files
    API has deleted it (49 h); the run answers every record, and once every job is collected its media are
    deleted: the emulator's store keeps no media file."""
    big = wav(11, seconds=INLINE_MAX_BYTES / 8000 + 1)
    (tmp_path / "scans").mkdir()
    (tmp_path / "scans/a.wav").write_bytes(big)
    with start_in_thread(tmp_path / "emu", job_seconds=1.0) as emulator:
        spec = write_spec(tmp_path, "expiry", key=None, prompt=PROMPT,
                          backend={"type": "gemini", "base_url": emulator.base_url},
                          source={"type": "files", "path": "scans/*.wav", "format": "media"})
        first = cli("run", "--no-wait", str(spec))
        assert first.exit_code == 75, first.stderr
        assert len(_events(first.stderr, "media uploaded")) == 1
        client = genai_client(emulator.base_url)
        assert len(_media_files(client)) == 1
        for job in client.batches.list():  # the job ran while its file lived; collected by the next run
            wait_done(client, job.name or "")
        http_json("POST", f"{emulator.base_url}/_emulator/age_files?seconds={aged_hours * 3600}")
        (tmp_path / "scans/b.wav").write_bytes(big)  # one new request, reading the same content
        again = cli("run", str(spec))
        assert again.exit_code == 0, again.stderr
        assert len(_events(again.stderr, "media uploaded")) == uploads
        rows = read_rows(tmp_path / "out/result.jsonl")
        assert sorted(r["key"] for r in rows) == ["a.wav", "b.wav"] and all(r["status"] == "ok" for r in rows)
        _assert_each_answer_names_its_file(rows, tmp_path / "scans")
        assert _media_files(client) == []


def test_files_expired_while_their_job_waited_are_uploaded_again_and_answered(tmp_path: Path) -> None:
    """The Files API deletes the run's media uploads after the job is created and before it runs (the emulator's
    files aged 49 h): every line of the job is refused with the service's 403. The retry stages the content
    again, a new upload, and every record is answered; no error row, and no request attempt spent on it."""
    big = wav(12, seconds=INLINE_MAX_BYTES / 8000 + 1)
    (tmp_path / "scans").mkdir()
    for name in ("a.wav", "b.wav"):
        (tmp_path / "scans" / name).write_bytes(big)
    with start_in_thread(tmp_path / "emu", job_seconds=2.0) as emulator:
        spec = write_spec(tmp_path, "gone", key=None, prompt=PROMPT,
                          backend={"type": "gemini", "base_url": emulator.base_url},
                          source={"type": "files", "path": "scans/*.wav", "format": "media"},
                          retry={"request_attempts": 1, "backoff": {"initial": "0.1s", "max": "1s"}})
        client = genai_client(emulator.base_url)
        done: dict[str, Any] = {}
        run = threading.Thread(target=lambda: done.setdefault("result", cli("run", str(spec))))
        run.start()
        deadline = time.monotonic() + 30
        while not list(client.batches.list()):  # the job is created; its lines are read a quarter of 2 s later
            assert time.monotonic() < deadline and run.is_alive()
            time.sleep(0.02)
        http_json("POST", f"{emulator.base_url}/_emulator/age_files?seconds={49 * 3600}")
        run.join(60)
        result = done["result"]
        assert result.exit_code == 0, result.stderr
        assert len(_events(result.stderr, "job submitted")) == 2  # the first job's lines were refused, then a retry
        assert len(_events(result.stderr, "media uploaded")) == 2  # the content uploaded again for the retry
        rows = read_rows(tmp_path / "out/result.jsonl")
        assert sorted(r["key"] for r in rows) == ["a.wav", "b.wav"] and all(r["status"] == "ok" for r in rows)
        _assert_each_answer_names_its_file(rows, tmp_path / "scans")
        assert _media_files(client) == []


@pytest.mark.parametrize("setting", [None, "100000"])
def test_media_over_the_projects_file_storage_go_in_waves(tmp_path: Path, setting: str | None) -> None:
    """Six distinct files over the inline threshold (~41 KB each), two a job, against an emulator whose project
    may hold 100 KB of files: one job's media at a time. Refused by the service (429 on upload) or held back by
    `jobs.max_media_bytes` before it is asked, the next job waits until a collected job's media are deleted; the
    run ends with every record answered, nothing failed, and no media left in the Files API."""
    (tmp_path / "scans").mkdir()
    files = {f"w{i}.wav": wav(20 + i, seconds=INLINE_MAX_BYTES / 8000 + 1) for i in range(6)}
    for name, data in files.items():
        (tmp_path / "scans" / name).write_bytes(data)
    plan = tmp_path / "quota.yaml"
    plan.write_text("quota: {file_storage_bytes: 100000}\n")
    jobs: dict[str, Any] = {"poll_interval": "0.2s", "max_requests": 2, "max_concurrent": 3}
    if setting is not None:
        jobs["max_media_bytes"] = setting
    with start_in_thread(tmp_path / "emu", job_seconds=0.2, faults=plan) as emulator:
        spec = write_spec(tmp_path, "waves", key=None, prompt=PROMPT, jobs=jobs,
                          backend={"type": "gemini", "base_url": emulator.base_url},
                          source={"type": "files", "path": "scans/*.wav", "format": "media"})
        result = cli("run", str(spec))
        assert result.exit_code == 0, result.stderr
        rows = read_rows(tmp_path / "out/result.jsonl")
        assert sorted(r["key"] for r in rows) == sorted(files) and all(r["status"] == "ok" for r in rows)
        _assert_each_answer_names_its_file(rows, tmp_path / "scans")
        uploads = len(_events(result.stderr, "media uploaded"))
        # held back before it is asked, each content goes up once; refused by the service, a job half staged gives
        # back what it uploaded (so that jobs each holding part of their media cannot block one another)
        assert uploads == 6 if setting is not None else uploads >= 6
        assert len(_events(result.stderr, "job submitted")) == 3
        refused = http_json("GET", f"{emulator.base_url}/_emulator/stats")[1]["faults"].get(
            "quota_file_storage_bytes", 0)
        if setting is None:
            assert refused > 0  # waves: the service refused what did not fit, and the job waited
        else:
            assert refused == 0 and _events(result.stderr, "waiting for room in the Files API")
        assert _media_files(genai_client(emulator.base_url)) == []


def test_plan_counts_the_media_to_stage_those_staged_already_and_their_tokens(tmp_path: Path) -> None:
    """Two long WAVs (uploaded), a PNG and a two-page PDF (inline): `plan --json` counts each and its prompt tokens
    (audio 32 a second, an image of at most 384 px 258, a PDF page 258), which the estimate's input includes. After
    a run left its job at the service, the uploads it made count as staged already (a new record reads one)."""
    seconds = INLINE_MAX_BYTES / 8000 + 1
    files = {"a.wav": wav(31, seconds=seconds), "b.wav": wav(32, seconds=seconds), "c.png": png(3),
             "d.pdf": pdf(4, pages=2)}
    (tmp_path / "scans").mkdir()
    for name, data in files.items():
        (tmp_path / "scans" / name).write_bytes(data)
    with start_in_thread(tmp_path / "emu", job_seconds=30.0) as emulator:
        spec = write_spec(tmp_path, "planned", key=None, prompt=PROMPT,
                          backend={"type": "gemini", "base_url": emulator.base_url},
                          source={"type": "files", "path": "scans/*.*", "format": "media"})
        planned = cli("plan", "--json", str(spec))
        assert planned.exit_code == 0, planned.stderr
        report = json.loads(planned.stdout)
        tokens = 2 * math.ceil(32 * seconds) + 258 + 2 * 258
        assert report["media"] == {
            "parts": 4, "files": 4, "bytes": sum(map(len, files.values())), "tokens": tokens,
            "upload_files": 2, "upload_bytes": 2 * len(files["a.wav"]), "staged_files": 0, "staged_bytes": 0,
            "inline_files": 2, "inline_bytes": len(files["c.png"]) + len(files["d.pdf"])}
        assert report["cost"]["planned_tokens"]["input"] > tokens
        text = cli("plan", str(spec)).stdout
        assert "media: 4 part(s), 4 distinct local file(s)" in text and "2 to stage" in text

        assert cli("run", "--no-wait", str(spec)).exit_code == 75  # its job waits at the service, media and all
        (tmp_path / "scans/e.wav").write_bytes(files["a.wav"])
        again = json.loads(cli("plan", "--json", str(spec)).stdout)["media"]
        # the job in flight is collected first, so every record counts as to send: e.wav is a.wav's content
        assert (again["parts"], again["files"]) == (5, 4)
        assert (again["upload_files"], again["staged_files"], again["inline_files"]) == (0, 2, 2)


def test_a_job_whose_media_alone_pass_max_media_bytes_is_refused_at_plan_time(tmp_path: Path) -> None:
    """Three distinct WAVs over the inline threshold (~41 KB each) in one job, `jobs.max_media_bytes: 100000`: a
    job that could never be staged. `plan` exits 2 naming the unit, its records and both figures; `run` exits 2
    the same way with nothing uploaded, the emulator's file store empty."""
    (tmp_path / "scans").mkdir()
    for i in range(3):
        (tmp_path / "scans" / f"w{i}.wav").write_bytes(wav(40 + i, seconds=INLINE_MAX_BYTES / 8000 + 1))
    media = sum(p.stat().st_size for p in (tmp_path / "scans").iterdir())
    with start_in_thread(tmp_path / "emu", job_seconds=0.2) as emulator:
        spec = write_spec(tmp_path, "too-big", key=None, prompt=PROMPT,
                          jobs={"poll_interval": "0.2s", "max_media_bytes": "100000"},
                          backend={"type": "gemini", "base_url": emulator.base_url},
                          source={"type": "files", "path": "scans/*.wav", "format": "media"})
        for command in ("plan", "run"):
            refused = cli(command, str(spec))
            assert refused.exit_code == 2, refused.stderr
            assert f"unit 0 (3 records): its media to upload are {media:,} bytes" in refused.stderr
            assert "jobs.max_media_bytes: 100,000" in refused.stderr
        assert list(genai_client(emulator.base_url).files.list()) == []
