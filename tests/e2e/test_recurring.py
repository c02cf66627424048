"""Specs run again and again: answers kept per record, only what changed is sent, and nothing traps a spec."""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.emulator_helpers import http_json
from support.helpers import cli, cli_process, read_rows, write_jsonl, write_spec
from support.servers import batchflow_emulator

from batchflow.state.shard_files import request_key
from batchflow.state.state import StateStore


def _batches(url: str) -> list[dict[str, Any]]:
    """Every batch the emulator holds, as the API lists them (metadata of each Operation)."""
    found: list[dict[str, Any]] = []
    token = ""
    while True:
        status, body = http_json("GET", f"{url}/v1beta/batches?pageSize=100&pageToken={urllib.parse.quote(token)}")
        assert status == 200, body
        found += [op["metadata"] for op in body.get("operations", [])]
        token = body.get("nextPageToken", "")
        if not token:
            return found


def _sent(url: str, spec: str, gen: int) -> int:
    """Requests the emulator was sent in the jobs of one generation of a spec."""
    return sum(int(b["batchStats"]["requestCount"]) for b in _batches(url)
               if b.get("displayName", "").startswith(f"batchflow-{spec}-g{gen}-"))  # other tests' may have none


def _calls(url: str) -> dict[str, int]:
    status, body = http_json("GET", f"{url}/_emulator/stats")
    assert status == 200
    calls: dict[str, int] = body["calls_by_endpoint"]
    return {k: v for k, v in calls.items() if not k.startswith("emulator.")}


def _submitted(logs: str) -> int:
    """Requests in the jobs a run's JSON logs say it submitted."""
    events = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    return sum(e["requests"] for e in events if e["event"] == "job submitted")


def _rewrite_identically(path: Path) -> None:
    """A new file with the same bytes (a new inode and mtime), as an export that writes its output again."""
    copy = path.with_suffix(".copy")
    shutil.copyfile(path, copy)
    os.replace(copy, path)
    os.utime(path, (1_000_000_000, 1_000_000_000))


def test_a_grown_edited_and_rewritten_input_sends_only_what_changed(tmp_path: Path, emulator_url: str) -> None:
    first = [{"id": f"a{i}", "text": f"first part {i}"} for i in range(5_000)]
    second = [{"id": f"b{i}", "text": f"second part {i}"} for i in range(5_000)]
    write_jsonl(tmp_path / "data/in-1.jsonl", first)
    write_jsonl(tmp_path / "data/in-2.jsonl", second)
    spec = write_spec(tmp_path, name="grow", source={"type": "files", "path": "data/in-*.jsonl"},
                      backend={"type": "gemini", "base_url": emulator_url})
    assert (done := cli_process("run", str(spec))).returncode == 0, done.stderr
    before = {r["key"]: r for r in read_rows(tmp_path / "out/result.jsonl")}
    assert _sent(emulator_url, "grow", 1) == 10_000

    kept = first[200:]  # 200 removed
    for rec in kept[:300]:  # 300 edited
        rec["text"] += " (edited)"
    added = [{"id": f"c{i}", "text": f"appended {i}"} for i in range(500)]  # 500 appended
    write_jsonl(tmp_path / "data/in-1.jsonl", kept + added)
    # the second file rewritten, byte-identical, elsewhere: under another name the glob still matches
    shutil.copyfile(tmp_path / "data/in-2.jsonl", tmp_path / "data/in-2-rewritten.jsonl")
    (tmp_path / "data/in-2.jsonl").unlink()
    assert (done := cli_process("run", str(spec))).returncode == 0, done.stderr
    assert _sent(emulator_url, "grow", 2) == 800, "exactly the new and the edited records are sent"
    rows = read_rows(tmp_path / "out/result.jsonl")
    assert [r["key"] for r in rows] == [r["id"] for r in kept + added + second]
    edited = {r["id"] for r in kept[:300]}
    untouched = [r for r in rows if r["key"] in before and r["key"] not in edited]
    assert len(untouched) == 9_500 and all(r == before[r["key"]] for r in untouched)
    assert all(r["status"] == "ok" for r in rows)

    calls = _calls(emulator_url)
    assert (done := cli_process("run", str(spec))).returncode == 0, done.stderr
    assert _calls(emulator_url) == calls, "a third run makes no API call at all"


def test_touching_or_copying_the_input_changes_nothing(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "data/in.jsonl", [{"id": f"r{i}", "text": f"t{i}"} for i in range(30)])
    spec = write_spec(tmp_path)
    assert cli("run", str(spec)).exit_code == 0
    _rewrite_identically(tmp_path / "data/in.jsonl")
    again = cli("run", str(spec))
    assert again.exit_code == 0, again.stderr
    assert "job submitted" not in again.stderr and "prepared" in again.stderr, "read again, to know it is the same"
    state = StateStore(tmp_path / ".batchflow/t").load()
    assert state is not None and state.gen == 1, "the same content is the same generation"
    third = cli("run", str(spec))
    assert "prepared" not in third.stderr, "and now its new mtime is known: not even read"


@pytest.mark.parametrize(("change", "resent"), [
    ({"prompt": "Tell me about {{ text }}"}, 20),
    ({"model": "gemini-2.5-pro"}, 20),
    ({"generation_config": {"temperature": 0.5}}, 20),
    ({"output": {"type": "files", "path": "out/elsewhere.jsonl", "max_failed": 3}}, 0),
    ({"retry": {"request_attempts": 5}, "jobs": {"poll_interval": "1s", "max_concurrent": 2}}, 0),
])
def test_a_spec_edit_resends_what_reaches_the_requests_and_nothing_else(tmp_path: Path, change: dict[str, Any],
                                                                        resent: int) -> None:
    write_jsonl(tmp_path / "data/in.jsonl", [{"id": f"r{i}", "text": f"t{i}"} for i in range(20)])
    assert cli("run", str(write_spec(tmp_path))).exit_code == 0
    spec = write_spec(tmp_path, **change)
    spec.write_text("# a comment added in review\n" + spec.read_text())
    again = cli("run", str(spec))
    assert again.exit_code == 0, again.stderr
    assert _submitted(again.stderr) == resent
    output = change["output"]["path"] if "output" in change else "out/result.jsonl"
    assert len(read_rows(tmp_path / output)) == 20


def test_a_comment_alone_resends_nothing_and_plans_nothing(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "data/in.jsonl", [{"id": "a", "text": "x"}, {"id": "b", "text": "y"}])
    spec = write_spec(tmp_path)
    assert cli("run", str(spec)).exit_code == 0
    spec.write_text(spec.read_text() + "# reviewed\n")
    assert cli("plan", "--exit-code", str(spec)).exit_code == 0
    again = cli("run", str(spec))
    assert again.exit_code == 0 and "prepared" not in again.stderr


def test_plan_shows_the_difference_and_exit_code_tells_ci_a_run_would_submit(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "data/in.jsonl", [{"id": f"r{i}", "text": f"t{i}"} for i in range(10)])
    spec = write_spec(tmp_path)
    assert cli("plan", "--exit-code", str(spec)).exit_code == 3, "before the first run, everything is to send"
    assert cli("run", str(spec)).exit_code == 0
    assert cli("plan", "--exit-code", str(spec)).exit_code == 0
    records = [{"id": f"r{i}", "text": f"t{i}"} for i in range(2, 10)] + [{"id": "new", "text": "n"}]
    records[0]["text"] = "edited"
    write_jsonl(tmp_path / "data/in.jsonl", records)
    plan = cli("plan", "--exit-code", str(spec))
    assert plan.exit_code == 3, plan.stderr
    assert "records: 9: 1 new, 1 changed, 7 unchanged (answers reused), 0 retried after an error, 2 removed" \
        in plan.stdout
    assert "new: 'new'" in plan.stdout and "changed: 'r2'" in plan.stdout and "jobs to submit: 1 (2 requests" \
        in plan.stdout
    state = StateStore(tmp_path / ".batchflow/t").load()
    assert state is not None and state.gen == 1, "plan changes nothing"


@pytest.fixture
def faulty_emulator(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[str]:
    plan = tmp_path_factory.mktemp("faults") / "plan.yaml"
    plan.write_text(f"seed: 5\nrequests: {{fail: 0.3, codes: [{request.param}]}}\n")
    with batchflow_emulator(tmp_path_factory.mktemp("faulty"), job_seconds=0.1, faults=plan) as url:
        yield url


def _error_keys(path: Path) -> set[str]:
    return {r["key"] for r in read_rows(path) if r["status"] != "ok"}


def _unit_keys(tmp_path: Path, name: str) -> set[str]:
    state = StateStore(tmp_path / ".batchflow" / name).load()
    assert state is not None
    keys: set[str] = set()
    for shard in state.shards:
        with open(tmp_path / ".batchflow" / name / shard.requests, "rb") as fh:
            keys |= {request_key(line) for line in fh}
    return keys


@pytest.mark.parametrize("faulty_emulator", [429], indirect=True)
def test_the_next_run_sends_exactly_the_records_that_failed_for_a_reason_that_may_pass(
        tmp_path: Path, faulty_emulator: str) -> None:
    write_jsonl(tmp_path / "data/in.jsonl", [{"id": f"r{i}", "text": f"t{i}"} for i in range(200)])
    spec = write_spec(tmp_path, name="flaky", backend={"type": "gemini", "base_url": faulty_emulator},
                      retry={"request_attempts": 1, "backoff": {"initial": "0.1s"}},
                      output={"type": "files", "path": "out/result.jsonl", "max_failed": 200})
    assert (first := cli("run", str(spec))).exit_code == 0, first.stderr
    failed = _error_keys(tmp_path / "out/result.jsonl")
    assert 20 < len(failed) < 100
    assert (second := cli("run", str(spec))).exit_code == 0, second.stderr
    assert _unit_keys(tmp_path, "flaky") == failed
    assert _sent(faulty_emulator, "flaky", 2) == len(failed)
    assert len(_error_keys(tmp_path / "out/result.jsonl")) < len(failed), "some pass the second time"


@pytest.mark.parametrize("faulty_emulator", [400], indirect=True)
def test_a_failure_that_would_come_back_the_same_is_kept_until_retry_errors(tmp_path: Path,
                                                                             faulty_emulator: str) -> None:
    write_jsonl(tmp_path / "data/in.jsonl", [{"id": f"r{i}", "text": f"t{i}"} for i in range(100)])
    spec = write_spec(tmp_path, name="invalid", backend={"type": "gemini", "base_url": faulty_emulator},
                      retry={"request_attempts": 1},
                      output={"type": "files", "path": "out/result.jsonl", "max_failed": 100})
    assert cli("run", str(spec)).exit_code == 0
    failed = _error_keys(tmp_path / "out/result.jsonl")
    assert failed
    again = cli("run", str(spec))
    assert again.exit_code == 0 and "job submitted" not in again.stderr, "a 400 is kept: it would come back"
    assert "kept: " in cli("status", str(spec)).stdout
    retried = cli("run", "--retry-errors", str(spec))
    assert retried.exit_code == 0, retried.stderr
    assert _unit_keys(tmp_path, "invalid") == failed


def test_run_cancel_run_goes_on_and_ends_ok(tmp_path: Path, emulator_url: str) -> None:
    write_jsonl(tmp_path / "data/in.jsonl", [{"id": f"r{i}", "text": f"t{i}"} for i in range(6)])
    spec = write_spec(tmp_path, name="cancel-run", backend={"type": "gemini", "base_url": emulator_url},
                      jobs={"max_requests": 2, "poll_interval": "0.2s"})
    assert cli("run", "--no-wait", str(spec)).exit_code == 75
    cancelled = cli("cancel", str(spec))
    assert cancelled.exit_code == 0 and "cancelled 3 job(s)" in cancelled.stdout
    again = cli("run", str(spec))
    assert again.exit_code == 0, again.stderr
    rows = read_rows(tmp_path / "out/result.jsonl")
    assert [r["key"] for r in rows] == [f"r{i}" for i in range(6)] and all(r["status"] == "ok" for r in rows)


def test_run_cancel_restart_starts_over_and_ends_ok(tmp_path: Path, emulator_url: str) -> None:
    write_jsonl(tmp_path / "data/in.jsonl", [{"id": f"r{i}", "text": f"t{i}"} for i in range(4)])
    spec = write_spec(tmp_path, name="cancel-restart", backend={"type": "gemini", "base_url": emulator_url})
    assert cli("run", "--no-wait", str(spec)).exit_code == 75
    assert cli("cancel", str(spec)).exit_code == 0
    restarted = cli("run", "--restart", str(spec))
    assert restarted.exit_code == 0, restarted.stderr
    assert "the old state and its kept answers are in" in restarted.stdout
    assert len(read_rows(tmp_path / "out/result.jsonl")) == 4


def test_cancel_of_a_finished_spec_changes_nothing(tmp_path: Path, emulator_url: str) -> None:
    write_jsonl(tmp_path / "data/in.jsonl", [{"id": "a", "text": "x"}])
    spec = write_spec(tmp_path, name="cancel-done", backend={"type": "gemini", "base_url": emulator_url})
    assert cli("run", str(spec)).exit_code == 0
    assert "cancelled 0 job(s)" in cli("cancel", str(spec)).stdout
    calls = _calls(emulator_url)
    again = cli("run", str(spec))
    assert again.exit_code == 0 and "job submitted" not in again.stderr
    assert {k: v for k, v in _calls(emulator_url).items() if "create" in k} == {
        k: v for k, v in calls.items() if "create" in k}


def test_an_input_changed_while_jobs_run_is_planned_once_they_are_collected(tmp_path: Path,
                                                                            emulator_url: str) -> None:
    write_jsonl(tmp_path / "data/in.jsonl", [{"id": f"r{i}", "text": f"t{i}"} for i in range(5)])
    spec = write_spec(tmp_path, name="moving", backend={"type": "gemini", "base_url": emulator_url})
    assert cli("run", "--no-wait", str(spec)).exit_code == 75
    write_jsonl(tmp_path / "data/in.jsonl", [{"id": f"r{i}", "text": f"t{i}"} for i in range(7)])
    done = cli("run", str(spec))
    assert done.exit_code == 0, done.stderr
    assert _sent(emulator_url, "moving", 1) == 5 and _sent(emulator_url, "moving", 2) == 2, \
        "the jobs in flight were collected, their answers kept, and only the 2 new records sent"
    assert [r["key"] for r in read_rows(tmp_path / "out/result.jsonl")] == [f"r{i}" for i in range(7)]


def test_state_json_names_no_secret(tmp_path: Path, emulator_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", "sk-very-secret-value")
    write_jsonl(tmp_path / "data/in.jsonl", [{"id": "a", "text": "x"}])
    spec = write_spec(tmp_path, name="secret", backend={"type": "gemini", "base_url": emulator_url})
    assert cli("run", str(spec)).exit_code == 0
    for path in (tmp_path / ".batchflow").rglob("*"):
        if path.is_file():
            assert b"sk-very-secret-value" not in path.read_bytes(), path
    assert json.loads((tmp_path / ".batchflow/secret/state.json").read_text())["spec"]["backend"] == "gemini"


def test_an_appended_and_edited_export_is_compared_in_place_and_counted_right(tmp_path: Path) -> None:
    records = [{"id": f"r{i}", "text": f"t{i}"} for i in range(40)]
    write_jsonl(tmp_path / "data/in.jsonl", records)
    spec = write_spec(tmp_path, jobs={"max_requests": 15, "poll_interval": "0.1s"})
    assert cli("run", str(spec)).exit_code == 0
    before = {r["key"]: r for r in read_rows(tmp_path / "out/result.jsonl")}
    records[7]["text"] = "edited in place"
    records[30] = {"id": "r30-new", "text": "a new record where r30 was"}
    write_jsonl(tmp_path / "data/in.jsonl", [*records, {"id": "x1", "text": "appended"}])
    plan = cli("plan", str(spec)).stdout
    assert "records: 41: 2 new, 1 changed, 38 unchanged (answers reused), 0 retried after an error, 1 removed" \
        in plan, plan
    assert "removed: 'r30'" in plan and "changed: 'r7'" in plan
    again = cli("run", str(spec))
    assert again.exit_code == 0, again.stderr
    assert _submitted(again.stderr) == 3
    rows = read_rows(tmp_path / "out/result.jsonl")
    assert [r["key"] for r in rows] == [r["id"] for r in records] + ["x1"]
    assert all(r == before[r["key"]] for r in rows if r["key"] not in ("r7", "r30-new", "x1"))
    assert rows[7]["record"]["text"] == "edited in place" and rows[7] != before["r7"]


def test_a_new_record_with_the_key_of_an_unchanged_one_is_a_duplicate(tmp_path: Path) -> None:
    records = [{"id": f"r{i}", "text": f"t{i}"} for i in range(10)]
    write_jsonl(tmp_path / "data/in.jsonl", records)
    spec = write_spec(tmp_path)
    assert cli("run", str(spec)).exit_code == 0
    write_jsonl(tmp_path / "data/in.jsonl", [*records, {"id": "r3", "text": "the same key again"}])
    again = cli("run", str(spec))
    assert again.exit_code == 2
    assert f"{tmp_path}/data/in.jsonl:11: record 11: duplicate key 'r3' (record 4 has it too)" in again.stderr
    assert "job submitted" not in again.stderr
    state = StateStore(tmp_path / ".batchflow/t").load()
    assert state is not None and state.gen == 1, "the state is as it was"


def test_a_run_that_lost_its_state_adopts_the_jobs_it_made_and_pays_for_none_twice(
        tmp_path: Path, emulator_url: str) -> None:
    write_jsonl(tmp_path / "data/in.jsonl", [{"id": f"r{i}", "text": f"t{i}"} for i in range(9)])
    spec = write_spec(tmp_path, name="ephemeral", backend={"type": "gemini", "base_url": emulator_url},
                      jobs={"max_requests": 3, "poll_interval": "0.2s"})
    assert cli("run", "--no-wait", str(spec)).exit_code == 75
    shutil.rmtree(tmp_path / ".batchflow")  # what a new container sees
    for _ in range(40):
        again = cli("run", "--no-wait", str(spec))
        if again.exit_code == 0:
            break
        assert again.exit_code == 75, again.stderr
    assert again.exit_code == 0, again.stderr
    _, stats = http_json("GET", f"{emulator_url}/_emulator/stats")
    made = {k: v for k, v in stats["creates_by_display_name"].items() if k.startswith("batchflow-ephemeral-")}
    assert len(made) == 3 and set(made.values()) == {1}, made
    assert [r["key"] for r in read_rows(tmp_path / "out/result.jsonl")] == [f"r{i}" for i in range(9)]


def test_restart_makes_new_display_names_and_adopts_nothing_old(tmp_path: Path, emulator_url: str) -> None:
    write_jsonl(tmp_path / "data/in.jsonl", [{"id": "a", "text": "x"}])
    spec = write_spec(tmp_path, name="fresh-start", backend={"type": "gemini", "base_url": emulator_url})
    assert cli("run", str(spec)).exit_code == 0
    restarted = cli("run", "--restart", str(spec))
    assert restarted.exit_code == 0 and _submitted(restarted.stderr) == 1, restarted.stderr
    assert _sent(emulator_url, "fresh-start", 1) == 1 and _sent(emulator_url, "fresh-start", 2) == 1


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_an_unreachable_api_fails_a_no_wait_run_at_once_with_one_line(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "data/in.jsonl", [{"id": "a", "text": "x"}])
    closed = f"http://127.0.0.1:{_closed_port()}"
    spec = write_spec(tmp_path, name="nowhere", backend={"type": "gemini", "base_url": closed})
    start = time.monotonic()
    result = cli_process("--log-format", "console", "run", "--no-wait", str(spec),
                         env={**os.environ, "GEMINI_API_KEY": "k"})
    assert result.returncode == 1, result.stderr
    assert time.monotonic() - start < 8  # a refused connection is tried twice, not by every retry (was ~13 s)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "cannot be reached" in errors[0] and "nowhere.yaml" in errors[0], result.stderr


def test_an_unreachable_api_fails_a_waiting_run_after_the_bound(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("batchflow.execute.runner.UNREACHABLE_FOR", 0.5)
    monkeypatch.setenv("GEMINI_API_KEY", "k")
    write_jsonl(tmp_path / "data/in.jsonl", [{"id": "a", "text": "x"}])
    closed = f"http://127.0.0.1:{_closed_port()}"
    spec = write_spec(tmp_path, name="nowhere", backend={"type": "gemini", "base_url": closed},
                      retry={"backoff": {"initial": "0.2s", "max": "0.2s"}})
    result = cli("run", str(spec))
    assert result.exit_code == 1 and "cannot be reached" in result.stderr


def test_jobs_still_running_are_not_reported_as_an_error(tmp_path: Path, emulator_url: str) -> None:
    write_jsonl(tmp_path / "data/in.jsonl", [{"id": "a", "text": "x"}])
    spec = write_spec(tmp_path, name="later", backend={"type": "gemini", "base_url": emulator_url})
    result = cli("run", "--no-wait", str(spec))
    assert result.exit_code == 75
    assert "not finished: 1 job(s) in flight" in result.stderr and "error:" not in result.stderr


def test_a_directory_of_specs_runs_each_with_a_table_and_the_worst_exit_code(tmp_path: Path) -> None:
    specs = tmp_path / "specs"
    write_jsonl(specs / "data/in.jsonl", [{"id": f"r{i}", "text": f"t{i}"} for i in range(5)])
    write_spec(specs, name="first", output={"type": "files", "path": "out/first.jsonl"})
    write_spec(specs, name="second", output={"type": "files", "path": "out/second.jsonl"})
    write_spec(specs, name="broken", backend={"type": "gemini", "base_url": f"http://127.0.0.1:{_closed_port()}",
                                              "api_key_env": "HOME"})
    (specs / "notes.yaml").write_text("just: some yaml that is not a spec\n")
    for _ in range(20):
        result = cli("run", "--no-wait", str(specs))
        table = result.stdout[result.stdout.index("spec "):]
        if "first.yaml" in table and table.count(" ok\n") + table.endswith(" ok") == 2:
            break
    assert result.exit_code == 1, result.output
    lines = table.splitlines()
    assert lines[0].split() == ["spec", "records", "ok", "failed", "jobs", "outcome"]
    assert [line.split()[0].rsplit("/", 1)[-1] for line in lines[1:]] == ["broken.yaml", "first.yaml", "second.yaml"]
    assert lines[1].split()[-1] == "failed" and lines[2].split()[1:] == ["5", "5", "0", "1", "ok"]
    assert f"error: {specs}/broken.yaml: " in result.stderr and "notes.yaml" not in result.output
    assert len(read_rows(specs / "out/first.jsonl")) == 5 and len(read_rows(specs / "out/second.jsonl")) == 5


def test_two_specs_sharing_a_state_are_both_refused_naming_each_other(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "data/in.jsonl", [{"id": "a", "text": "x"}])
    one = write_spec(tmp_path, name="same")
    other = tmp_path / "other.yaml"
    other.write_text(one.read_text())
    result = cli("run", str(one), str(other))
    assert result.exit_code == 2
    assert f"{one}: name 'same': {one} and {other} would share the state" in result.stderr
    assert not (tmp_path / "out/result.jsonl").exists()


@pytest.mark.parametrize(("code", "status", "message"), [
    (401, "UNAUTHENTICATED", "API key not valid. Please pass a valid API key."),
    (403, "PERMISSION_DENIED", "The caller does not have permission"),
    (404, "NOT_FOUND", "models/gemini-2.5-flsh is not found for API version v1beta"),
])
def test_a_fault_that_will_not_cure_itself_fails_at_once_with_one_line(tmp_path: Path, code: int, status: str,
                                                                       message: str) -> None:
    import http.server
    import threading

    class Refusing(http.server.BaseHTTPRequestHandler):
        def _refuse(self) -> None:
            body = json.dumps({"error": {"code": code, "message": message, "status": status}}).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_DELETE = _refuse

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refusing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        write_jsonl(tmp_path / "data/in.jsonl", [{"id": "a", "text": "x"}])
        spec = write_spec(tmp_path, name="refused", backend={
            "type": "gemini", "base_url": f"http://127.0.0.1:{server.server_address[1]}", "api_key_env": "HOME"})
        result = cli("run", str(spec))
    finally:
        server.shutdown()
        server.server_close()
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    if code == 404:  # the model is asked for first (models.get): a spec error, before anything is staged
        assert result.exit_code == 2
        assert len(errors) == 1 and "models.get: 404 NOT_FOUND" in errors[0], result.stderr
        return
    assert result.exit_code == 1
    assert len(errors) == 1 and f"HTTP {code} {status}" in errors[0] and message in errors[0], result.stderr


@pytest.mark.parametrize("faulty_emulator", [503], indirect=True)
def test_an_input_changed_while_retries_wait_is_planned_anew_and_no_generation_is_left_behind(
        tmp_path: Path, faulty_emulator: str) -> None:
    records = [{"id": f"r{i}", "text": f"t{i}"} for i in range(60)]
    write_jsonl(tmp_path / "data/in.jsonl", records)
    waiting = {"request_attempts": 3, "backoff": {"initial": "10m", "max": "10m"}}
    output = {"type": "files", "path": "out/result.jsonl", "max_failed": 60}
    spec = write_spec(tmp_path, name="moving-retries", backend={"type": "gemini", "base_url": faulty_emulator},
                      retry=waiting, output=output)
    for extra in range(2):  # each time: the first jobs answer, the failed requests wait out a long backoff
        for _ in range(40):
            result = cli("run", "--no-wait", str(spec))
            if "shard(s) waiting" in result.stderr or result.exit_code != 75:
                break
        assert result.exit_code == 75 and "shard(s) waiting" in result.stderr, result.stderr
        records.append({"id": f"new{extra}", "text": "appended"})
        write_jsonl(tmp_path / "data/in.jsonl", records)
    final = write_spec(tmp_path, name="moving-retries", backend={"type": "gemini", "base_url": faulty_emulator},
                       retry={"request_attempts": 1}, output=output)
    done = cli("run", str(final))
    assert done.exit_code == 0, done.stderr
    assert [r["key"] for r in read_rows(tmp_path / "out/result.jsonl")] == [r["id"] for r in records]
    root = tmp_path / ".batchflow/moving-retries"
    assert sorted(p.name for p in root.glob("gen-*")) == ["gen-3"], "earlier generations are all gone"


def test_kept_answers_that_no_longer_match_the_records_are_a_state_error(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "data/in.jsonl", [{"id": f"r{i}", "text": f"t{i}"} for i in range(4)])
    spec = write_spec(tmp_path)
    assert cli("run", str(spec)).exit_code == 0
    answers = tmp_path / ".batchflow/t/gen-1/answers/part-00000.jsonl"
    answers.write_bytes(answers.read_bytes().split(b"\n", 1)[1])  # a line short
    (tmp_path / "out/result.jsonl").unlink()
    result = cli("run", str(spec))
    assert result.exit_code == 2
    assert "the part's records and kept answers do not match" in result.stderr
    assert not (tmp_path / "out/result.jsonl").exists(), "no partial output"
