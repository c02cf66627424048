"""The commands other than `run`: validate, plan, status, cancel, schema."""

from __future__ import annotations

import json
import re
from pathlib import Path

from support.helpers import cli, read_rows, write_jsonl, write_spec

BAD_SPEC = """\
version: 1
name: bad
backend:
  type: local
model: gemini-2.5-flash
source:
  type: files
  path: ${BATCHFLOW_TEST_UNSET_VAR}/in.jsonl
promtp: "Say {{ text }}"
jobs:
  max_requests: lots
output:
  type: files
  path: out/x.jsonl
"""


def test_validate_reports_every_error_with_its_position_and_writes_nothing(tmp_path: Path) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text(BAD_SPEC)
    result = cli("validate", str(spec))
    assert result.exit_code == 2
    lines = [line.removeprefix("error: ") for line in result.stderr.strip().splitlines()]
    assert any(re.match(rf"{re.escape(str(spec))}:8:\d+: source\.path: .*BATCHFLOW_TEST_UNSET_VAR", x) for x in lines)
    assert any(re.match(rf"{re.escape(str(spec))}:9:1: .*promtp.*did you mean 'prompt'", x) for x in lines)
    assert any(re.match(rf"{re.escape(str(spec))}:11:\d+: jobs\.max_requests: ", x) for x in lines)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]


def test_validate_renders_the_first_records(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "data/in.jsonl", [{"id": "a", "text": "x"}, {"id": "b", "text": "y"}])
    result = cli("validate", str(write_spec(tmp_path)))
    assert result.exit_code == 0, result.stderr
    assert "2 record(s) rendered: 'a', 'b'" in result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "t.yaml"]


def test_validate_checks_every_spec_given_and_fails_if_any_fails(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "data/in.jsonl", [{"id": "a"}])
    good = write_spec(tmp_path, name="good", prompt="static")
    bad = write_spec(tmp_path, name="bad2", prompt="{{ missing }}")
    result = cli("validate", str(good), str(bad))
    assert result.exit_code == 2
    assert "ok: " in result.stdout
    assert "record 1" in result.stderr and "missing" in result.stderr


def test_validate_plan_and_run_refuse_an_empty_input_with_one_located_line(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "data/in.jsonl", [])
    spec = write_spec(tmp_path)
    for command in ("validate", "plan", "run"):
        result = cli(command, str(spec))
        assert result.exit_code == 2, (command, result.stdout)
        [line] = [x for x in result.stderr.splitlines() if not x.startswith("{")]  # the JSON lines are logs
        assert line.startswith(f"error: {spec}:7:3: source: no records"), (command, line)
    assert not (tmp_path / "out").exists()


def test_an_empty_input_allowed_runs_to_an_empty_output_and_a_second_run_does_nothing(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "data/in.jsonl", [])
    spec = write_spec(tmp_path, source={"type": "files", "path": "data/in.jsonl", "allow_empty": True})
    validated = cli("validate", str(spec))
    assert validated.exit_code == 0 and "no records, as source.allow_empty allows" in validated.stdout
    planned = cli("plan", "--exit-code", str(spec))
    assert planned.exit_code == 0 and "records: 0: 0 new" in planned.stdout and "jobs to submit: 0" in planned.stdout
    first = cli("run", str(spec))
    assert first.exit_code == 0, first.stderr
    assert "0 records: 0 ok, 0 failed" in first.stdout
    output, state = tmp_path / "out/result.jsonl", tmp_path / ".batchflow/t/state.json"
    assert output.read_bytes() == b""
    seen = (output.stat().st_mtime_ns, state.read_bytes())
    again = cli("run", str(spec))
    assert again.exit_code == 0 and "0 records" in again.stdout
    assert (output.stat().st_mtime_ns, state.read_bytes()) == seen
    assert "finished; `run` has nothing to do" in cli("plan", str(spec)).stdout


def test_an_allowed_empty_input_that_grows_is_run_then_emptied_again(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "data/in.jsonl", [])
    spec = write_spec(tmp_path, source={"type": "files", "path": "data/in.jsonl", "allow_empty": True})
    assert cli("run", str(spec)).exit_code == 0
    write_jsonl(tmp_path / "data/in.jsonl", [{"id": "a", "text": "x"}])
    assert cli("run", str(spec)).exit_code == 0
    assert [r["key"] for r in read_rows(tmp_path / "out/result.jsonl")] == ["a"]
    write_jsonl(tmp_path / "data/in.jsonl", [])
    assert cli("run", str(spec)).exit_code == 0
    assert (tmp_path / "out/result.jsonl").read_bytes() == b""


def test_plan_before_a_run_counts_records_and_jobs(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "data/in.jsonl", [{"id": f"r{i}", "text": "x"} for i in range(25)])
    result = cli("plan", str(write_spec(tmp_path, jobs={"max_requests": 10})))
    assert result.exit_code == 0, result.stderr
    assert "records: 25: 25 new, 0 changed" in result.stdout
    assert "jobs to submit: 3 (25 requests; at most 10 requests" in result.stdout
    sample = result.stdout.split("sample request: ", 1)[1].splitlines()[0]
    assert json.loads(sample)["key"] == "r0"


def test_plan_and_status_after_a_run_say_it_is_finished(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "data/in.jsonl", [{"id": "a", "text": "x"}])
    spec = write_spec(tmp_path)
    assert cli("run", str(spec)).exit_code == 0
    assert "finished; `run` has nothing to do" in cli("plan", str(spec)).stdout
    status = cli("status", str(spec)).stdout
    assert "1 collected" in status and "merged: 1 rows, 1 ok, 0 failed" in status


def test_cancel_records_what_the_service_says_and_status_shows_it(tmp_path: Path, emulator_url: str) -> None:
    write_jsonl(tmp_path / "data/in.jsonl", [{"id": "a", "text": "x"}])
    spec = write_spec(tmp_path, name="cancelme", backend={"type": "gemini", "base_url": emulator_url})
    assert cli("run", "--no-wait", str(spec)).exit_code == 75
    cancelled = cli("cancel", str(spec))
    assert cancelled.exit_code == 0 and "cancelled 1 job(s)" in cancelled.stdout
    status = cli("status", str(spec)).stdout
    assert "jobs: 1 cancelled" in status and "1 job(s) cancelled with `batchflow cancel`" in status


def test_schema_prints_the_json_schema(repo_root: Path) -> None:
    result = cli("schema")
    assert json.loads(result.stdout) == json.loads((repo_root / "schemas/spec.schema.json").read_text())


def test_an_unexpected_error_is_one_line_without_a_traceback(tmp_path: Path) -> None:
    result = cli("run", str(tmp_path / "missing.yaml"))
    assert result.exit_code == 2
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_plan_after_a_run_whose_input_is_gone_shows_the_state(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "data/in.jsonl", [{"id": "a", "text": "x"}])
    spec = write_spec(tmp_path)
    assert cli("run", str(spec)).exit_code == 0
    (tmp_path / "data/in.jsonl").unlink()
    result = cli("plan", str(spec))
    assert result.exit_code == 0, result.stderr
    assert "finished; `run` has nothing to do" in result.stdout


def test_plan_after_the_prompt_changed_names_the_field_and_the_changed_records(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "data/in.jsonl", [{"id": "a", "text": "x"}])
    assert cli("run", str(write_spec(tmp_path))).exit_code == 0
    result = cli("plan", str(write_spec(tmp_path, prompt="Other {{ text }}")))
    assert result.exit_code == 0, result.stderr
    assert "spec fields changed: prompt" in result.stdout
    assert "records: 1: 0 new, 1 changed, 0 unchanged" in result.stdout and "changed: 'a'" in result.stdout
    assert "jobs to submit: 1" in result.stdout
