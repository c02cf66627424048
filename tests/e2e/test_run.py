"""`batchflow run` end to end on the local backend, driven through the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import orjson
import pytest
from support.helpers import cli, read_rows, write_jsonl, write_spec

from batchflow.state.shard_files import records, request_key
from batchflow.state.state import StateStore


def _records(n: int) -> list[dict[str, object]]:
    return [{"id": f"r{i}", "text": f"item number {i}"} for i in range(1, n + 1)]


def test_a_run_writes_one_ok_row_per_record_in_input_order(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "data/in.jsonl", _records(25))
    spec = write_spec(tmp_path, jobs={"max_requests": 10, "poll_interval": "0.1s"})
    result = cli("run", str(spec))
    assert result.exit_code == 0, result.stderr
    rows = read_rows(tmp_path / "out/result.jsonl")
    assert [r["key"] for r in rows] == [f"r{i}" for i in range(1, 26)]
    assert all(r["status"] == "ok" and r["text"] and r["attempts"] == 1 for r in rows)
    assert rows[3]["record"] == {"id": "r4", "text": "item number 4"}
    assert rows[0]["usage"]["total_tokens"] >= rows[0]["usage"]["prompt_tokens"] > 0
    state = StateStore(tmp_path / ".batchflow/t").load()
    assert state is not None and [s.count for s in state.shards] == [10, 10, 5]
    assert "25 records: 25 ok, 0 failed" in result.stdout


def test_a_second_run_of_a_finished_spec_does_nothing(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "data/in.jsonl", _records(5))
    spec = write_spec(tmp_path)
    assert cli("run", str(spec)).exit_code == 0
    before = (tmp_path / ".batchflow/t/state.json").read_bytes()
    out_before = (tmp_path / "out/result.jsonl").stat().st_mtime_ns
    again = cli("run", str(spec))
    assert again.exit_code == 0
    assert (tmp_path / ".batchflow/t/state.json").read_bytes() == before
    assert (tmp_path / "out/result.jsonl").stat().st_mtime_ns == out_before
    assert "job submitted" not in again.stderr


@pytest.mark.parametrize("manifest_format", [1, 2])
def test_a_state_of_an_earlier_format_is_upgraded_and_its_answers_reused(tmp_path: Path, manifest_format: int) -> None:
    write_jsonl(tmp_path / "data/in.jsonl", _records(12))
    spec = write_spec(tmp_path, jobs={"max_requests": 5, "poll_interval": "0.1s"})
    assert cli("run", str(spec)).exit_code == 0
    expected = (tmp_path / "out/result.jsonl").read_bytes()
    root = tmp_path / ".batchflow/t"
    # lay the state out as format 2 wrote it: one plan, shards/ and results/ at the top, no generations
    for name in ("shards", "results"):
        shutil.move(root / "gen-1" / name, root / name)
    shutil.rmtree(root / "gen-1")
    raw = json.loads((root / "state.json").read_text().replace('"gen-1/', '"'))
    for name in ("parts", "gen", "source", "spec", "previous", "answers", "diff"):
        del raw[name]
    raw["format"], raw["merged"] = manifest_format, None
    for shard in raw["shards"]:
        for job in shard["jobs"]:
            del job["cancel_requested"]
        if manifest_format == 1:  # as batchflow wrote manifests before format 2: key and record
            with open(root / shard["requests"], "rb") as lines:
                pairs = list(zip(map(request_key, lines), records(root / shard["manifest"], 2), strict=True))
            (root / shard["manifest"]).write_bytes(
                b"".join(orjson.dumps({"key": k, "record": r}) + b"\n" for k, r in pairs))
    (root / "state.json").write_text(json.dumps(raw))
    (tmp_path / "out/result.jsonl").unlink()
    again = cli("run", str(spec))
    assert again.exit_code == 0, again.stderr
    assert (tmp_path / "out/result.jsonl").read_bytes() == expected
    assert "job submitted" not in again.stderr
    assert not (root / "shards").exists(), "the old layout is gone once its answers are kept"
    write_jsonl(tmp_path / "data/in.jsonl", [*_records(12), {"id": "new", "text": "n"}])
    third = cli("run", str(spec))
    assert third.exit_code == 0, third.stderr
    assert third.stderr.count("job submitted") == 1 and '"requests": 1' in third.stderr


def test_parse_json_fills_parsed_and_a_schema_answer_parses(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "data/in.jsonl", _records(3))
    spec = write_spec(tmp_path, generation_config={
        "response_mime_type": "application/json",
        "response_schema": {"type": "object", "properties": {"label": {"type": "string", "enum": ["a", "b"]}},
                            "required": ["label"]}},
        output={"type": "files", "path": "out/result.jsonl", "parse": "json", "include_record": False})
    assert cli("run", str(spec)).exit_code == 0
    rows = read_rows(tmp_path / "out/result.jsonl")
    assert all(r["parsed"]["label"] in {"a", "b"} for r in rows)
    assert all("record" not in r for r in rows)


def test_a_text_answer_that_is_not_json_is_a_parse_error_that_counts_as_failed(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "data/in.jsonl", _records(2))
    spec = write_spec(tmp_path, output={"type": "files", "path": "out/result.jsonl", "parse": "json",
                                        "max_failed": 2})
    result = cli("run", str(spec))
    assert result.exit_code == 0, result.stderr
    rows = read_rows(tmp_path / "out/result.jsonl")
    assert {r["status"] for r in rows} == {"parse_error"} and all(r["text"] for r in rows)


def test_failed_requests_are_retried_then_reported_by_key_with_exit_1(tmp_path: Path) -> None:
    records = [{"id": "good", "request": {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}},
               {"id": "bad", "request": {"contents": []}}]
    write_jsonl(tmp_path / "data/in.jsonl", records)
    spec = write_spec(tmp_path, prompt=None, request="{{ request }}")
    result = cli("run", str(spec))
    assert result.exit_code == 1
    assert "1 of 2 records failed" in result.stderr
    rows = {r["key"]: r for r in read_rows(tmp_path / "out/result.jsonl")}
    assert rows["good"]["status"] == "ok" and rows["good"]["attempts"] == 1
    assert rows["bad"]["status"] == "error" and rows["bad"]["error"]["code"] == 400
    assert rows["bad"]["attempts"] == 3, "request_attempts defaults to 3"
    state = StateStore(tmp_path / ".batchflow/t").load()
    assert state is not None and [j.count for j in state.shards[0].jobs] == [2, 1, 1], "retries hold only the bad one"


def test_failures_within_max_failed_exit_0(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "data/in.jsonl", [{"id": "bad", "request": {"contents": []}}] + [
        {"id": f"g{i}", "request": {"contents": [{"parts": [{"text": "x"}]}]}} for i in range(99)])
    spec = write_spec(tmp_path, prompt=None, request="{{ request }}",
                      retry={"request_attempts": 1, "backoff": {"initial": "0s"}},
                      output={"type": "files", "path": "out/result.jsonl", "max_failed": "1%"})
    assert cli("run", str(spec)).exit_code == 0


def test_csv_output_flattens_rows(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "data/in.jsonl", _records(4))
    spec = write_spec(tmp_path, output={"type": "files", "path": "out/result.csv"})
    assert cli("run", str(spec)).exit_code == 0
    lines = (tmp_path / "out/result.csv").read_text().splitlines()
    assert len(lines) == 5 and lines[0].startswith("key,status,text")
    assert lines[1].startswith("r1,ok,")


def test_changing_only_the_output_merges_again_without_a_job(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "data/in.jsonl", _records(3))
    assert cli("run", str(write_spec(tmp_path))).exit_code == 0
    spec = write_spec(tmp_path, output={"type": "files", "path": "out/other.jsonl", "include_record": False})
    result = cli("run", str(spec))
    assert result.exit_code == 0
    assert "job submitted" not in result.stderr
    assert len(read_rows(tmp_path / "out/other.jsonl")) == 3


def test_restart_puts_the_state_and_its_answers_aside_and_sends_everything(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "data/in.jsonl", _records(3))
    spec = write_spec(tmp_path)
    assert cli("run", str(spec)).exit_code == 0
    restarted = cli("run", "--restart", str(spec))
    assert restarted.exit_code == 0, restarted.stderr
    old = list((tmp_path / ".batchflow/t/old").iterdir())
    assert len(old) == 1 and (old[0] / "state.json").exists() and (old[0] / "gen-1/answers").is_dir()
    assert f"the old state and its kept answers are in {old[0]}" in restarted.stdout
    assert restarted.stderr.count("job submitted") == 1 and '"new": 3' in restarted.stderr


def test_a_template_failing_deep_in_the_input_stops_the_run_with_nothing_submitted(tmp_path: Path) -> None:
    records = _records(40_001)
    del records[40_000]["text"]
    write_jsonl(tmp_path / "data/in.jsonl", records)
    spec = write_spec(tmp_path)
    result = cli("run", str(spec))
    assert result.exit_code == 2
    message = result.stderr.strip().splitlines()[-1]
    assert "data/in.jsonl:40001" in message and "record 40001" in message and "text" in message
    assert StateStore(tmp_path / ".batchflow/t").load() is None, "no state: nothing was planned or submitted"
    emulator = tmp_path / ".batchflow/t/emulator"  # the first 30,000 were uploaded while the rest were prepared
    assert sorted(p.relative_to(emulator).as_posix() for p in emulator.rglob("*") if p.is_file()) == [], \
        "what was staged is deleted, and nothing was created"
    assert not (tmp_path / "out").exists()


def test_a_duplicate_key_names_both_records(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "data/in.jsonl", [{"id": "a", "text": "x"}, {"id": "b", "text": "y"},
                                             {"id": "a", "text": "z"}])
    result = cli("run", str(write_spec(tmp_path)))
    assert result.exit_code == 2
    assert "data/in.jsonl:3: record 3: duplicate key 'a' (record 1 has it too)" in result.stderr


def test_no_wait_exits_75_until_the_jobs_are_done(tmp_path: Path, emulator_url: str) -> None:
    write_jsonl(tmp_path / "data/in.jsonl", _records(5))
    spec = write_spec(tmp_path, backend={"type": "gemini", "base_url": emulator_url})
    first = cli("run", "--no-wait", str(spec))
    assert first.exit_code == 75, first.stderr
    assert "1 job(s) in flight" in first.stderr
    status = cli("status", str(spec))
    assert "generation 1: 5 records, 5 sent in 1 unit(s) (0 done)" in status.stdout
    for _ in range(100):
        result = cli("run", "--no-wait", str(spec))
        if result.exit_code != 75:
            break
    assert result.exit_code == 0, result.stderr
    assert len(read_rows(tmp_path / "out/result.jsonl")) == 5


def test_the_output_rows_are_json_lines(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "data/in.jsonl", _records(2))
    assert cli("run", str(write_spec(tmp_path))).exit_code == 0
    for line in (tmp_path / "out/result.jsonl").read_text().splitlines():
        assert isinstance(json.loads(line), dict)


@pytest.mark.parametrize("command", ["plan", "status"])
def test_plan_and_status_before_any_run_write_nothing(tmp_path: Path, command: str) -> None:
    write_jsonl(tmp_path / "data/in.jsonl", _records(3))
    result = cli(command, str(write_spec(tmp_path)))
    assert result.exit_code == 0, result.stderr
    assert not (tmp_path / ".batchflow").exists()


def test_an_embed_spec_gives_every_row_an_embedding_of_the_asked_dimension(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "data/in.jsonl", _records(12))
    spec = write_spec(tmp_path, model="gemini-embedding-001", task="embed", prompt=None,
                      content="{{ text }}", embed_config={"output_dimensionality": 256, "task_type": "CLUSTERING"},
                      jobs={"max_requests": 5, "poll_interval": "0.1s"},
                      output={"type": "files", "path": "out/result.jsonl", "normalize": True})
    result = cli("run", str(spec))
    assert result.exit_code == 0, result.stderr
    rows = read_rows(tmp_path / "out/result.jsonl")
    assert [r["key"] for r in rows] == [f"r{i}" for i in range(1, 13)]
    for row in rows:
        assert row["status"] == "ok" and "text" not in row
        assert len(row["embedding"]) == 256 and (row["dimensions"], row["model"]) == (256, "gemini-embedding-001")
        assert abs(sum(v * v for v in row["embedding"]) - 1.0) < 1e-4, "output.normalize: unit vectors"
    assert rows[0]["embedding"] != rows[1]["embedding"]


def test_a_finished_spec_whose_input_was_removed_still_reruns_as_a_no_op(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "data/in.jsonl", _records(3))
    spec = write_spec(tmp_path)
    assert cli("run", str(spec)).exit_code == 0
    (tmp_path / "data/in.jsonl").unlink()
    again = cli("run", str(spec))
    assert again.exit_code == 0, again.stderr
    assert "the input is gone" in again.stderr


def test_nothing_in_a_record_chooses_a_path_the_runner_writes_to(tmp_path: Path) -> None:
    work = tmp_path / "work"
    hostile = ["../../escape", "/tmp/absolute-escape", "a/../../b", "..", "shards/../../x", "C:\\\\evil"]
    write_jsonl(work / "data/in.jsonl", [{"id": k, "text": k, "path": k} for k in hostile])
    spec = write_spec(work, output={"type": "files", "path": "out/result.jsonl"})
    before = {p for p in tmp_path.parent.rglob("*") if "escape" in p.name or p.name in {"b", "x"}}
    result = cli("run", str(spec))
    assert result.exit_code == 0, result.stderr
    assert [r["key"] for r in read_rows(work / "out/result.jsonl")] == hostile
    after = {p for p in tmp_path.parent.rglob("*") if "escape" in p.name or p.name in {"b", "x"}}
    assert after == before
    assert not Path("/tmp/absolute-escape").exists()
    written = {p.relative_to(work).parts[0] for p in work.rglob("*") if p.is_file()}
    assert written == {"data", "out", ".batchflow", "t.yaml"}
