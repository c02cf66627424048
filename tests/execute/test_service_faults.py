"""What the real service does that a run must survive (issue 13): stuck jobs, quota 429s on create, late and lost
outputs, blocked prompts and cut answers, driven by the emulator's seeded fault plan, the CLI run as a user would."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from support.helpers import cli_process, read_rows, write_jsonl, write_spec

from batchflow.emulator import start_in_thread
from batchflow.state.state import StateStore

FAST = {"poll_interval": "0.1s", "max_requests": 20}
OUTPUT = {"type": "files", "path": "out/result.jsonl", "include_record": False}
RETRY = {"job_attempts": 4, "request_attempts": 4, "backoff": {"initial": "0.05s", "max": "0.2s"}}


def _run(tmp_path: Path, plan: dict[str, Any], n: int = 60, **spec: Any) -> tuple[Any, dict[str, Any], list[str]]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "faults.yaml").write_text(yaml.safe_dump(plan))
    write_jsonl(tmp_path / "data/in.jsonl", ({"id": f"k{i:04d}", "text": f"t{i}"} for i in range(n)))
    with start_in_thread(tmp_path / "emulator", job_seconds=0.2, faults=tmp_path / "faults.yaml") as running:
        path = write_spec(tmp_path, name="svc", backend={"type": "gemini", "base_url": running.base_url},
                          **{"jobs": FAST, "retry": RETRY, "output": OUTPUT, **spec})
        done = cli_process("run", str(path), timeout=300)
        events = [json.loads(line).get("event", "") for line in done.stderr.splitlines() if line.startswith("{")]
        return done, running.engine.stats(), events


def _created_once(stats: dict[str, Any]) -> None:
    creates = {k: v for k, v in stats["creates_by_display_name"].items() if k.startswith("batchflow-svc-")}
    assert creates and max(creates.values()) == 1, "no display name was created twice"


def test_a_stuck_job_is_cancelled_and_its_requests_sent_again(tmp_path: Path) -> None:
    done, stats, events = _run(tmp_path, {"seed": 3, "jobs": {"stuck": 1}},
                               jobs={**FAST, "stuck_after": "1s"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert stats["faults"].get("job_stuck") == 1
    assert any(e.startswith("job stuck: cancelling it") for e in events)
    assert all(r["status"] == "ok" for r in read_rows(tmp_path / "out/result.jsonl"))
    state = StateStore(tmp_path / ".batchflow/svc").load()
    assert state is not None
    stuck = [j for _, j in state.jobs() if j.stuck]
    assert len(stuck) == 1 and stuck[0].ended == "cancelled"
    _created_once(stats)


def test_quota_429s_on_create_are_waited_out_never_created_twice(tmp_path: Path) -> None:
    # each 20-record job is ~1 KB (~250 tokens): room for about two at a time
    done, stats, events = _run(tmp_path, {"seed": 5, "quota": {"enqueued_tokens": 600}}, n=120,
                               jobs={**FAST, "max_enqueued_tokens": 10**9})  # our own gate off: the service's 429s
    assert done.returncode == 0, done.stderr[-2000:]
    assert stats["faults"].get("quota_enqueued_tokens", 0) >= 1
    assert any(e.startswith("the service's quota is full (429 on create)") for e in events)
    assert [r["status"] for r in read_rows(tmp_path / "out/result.jsonl")] == ["ok"] * 120
    _created_once(stats)


def test_the_token_gate_keeps_creates_under_the_quota(tmp_path: Path) -> None:
    done, stats, _ = _run(tmp_path, {"seed": 5, "quota": {"enqueued_tokens": 600}}, n=120,
                          jobs={**FAST, "max_enqueued_tokens": 600})
    assert done.returncode == 0, done.stderr[-2000:]
    assert stats["faults"].get("quota_enqueued_tokens", 0) == 0, "batchflow's own admission kept under the quota"
    _created_once(stats)


def test_a_late_output_is_waited_for_and_a_lost_one_sent_again(tmp_path: Path) -> None:
    done, stats, events = _run(tmp_path, {"seed": 7, "jobs": {"late_output": 1}, "output": {"late_seconds": "1s"}})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "job output not there yet; will look again" in events
    assert "job output lost: its requests are sent again" not in events
    assert all(r["status"] == "ok" and r["attempts"] == 1 for r in read_rows(tmp_path / "out/result.jsonl"))

    lost = tmp_path / "lost"
    done, stats, events = _run(lost, {"seed": 7, "jobs": {"late_output": 1}, "output": {"late_seconds": "30s"}},
                               jobs={**FAST, "output_wait": "0.5s"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "job output lost: its requests are sent again" in events
    rows = read_rows(lost / "out/result.jsonl")
    assert all(r["status"] == "ok" for r in rows) and max(r["attempts"] for r in rows) == 2
    _created_once(stats)


def test_blocked_prompts_are_error_rows_and_cut_answers_are_asked_again_when_the_spec_says_so(
        tmp_path: Path) -> None:
    plan = {"seed": 9, "requests": {"blocked": 0.1, "max_tokens": 0.2}}
    done, stats, _ = _run(tmp_path, plan, n=100, retry={**RETRY, "on": ["max_tokens"]},
                          output={**OUTPUT, "max_failed": "100%"})
    assert done.returncode == 0, done.stderr[-2000:]
    rows = read_rows(tmp_path / "out/result.jsonl")
    blocked = [r for r in rows if r["status"] == "error"]
    assert blocked and all(r["error"]["message"].startswith("blocked: SAFETY") for r in blocked)
    assert stats["faults"]["line_blocked"] == len(blocked), "a blocked prompt's answer is final: never sent again"
    assert stats["faults"].get("line_max_tokens", 0) >= 10
    cut = [r for r in rows if r.get("finish_reason") == "MAX_TOKENS"]
    assert len(cut) < stats["faults"]["line_max_tokens"], "cut answers were asked for again"
    assert any(r["attempts"] > 1 and r["status"] == "ok" and r["finish_reason"] == "STOP" for r in rows)


def test_a_run_through_every_fault_ends_with_every_record_accounted_for(tmp_path: Path) -> None:
    plan = {"seed": 13, "jobs": {"stuck": 1, "late_output": 0.3, "expire": 1}, "output": {"late_seconds": "0.5s"},
            "quota": {"enqueued_tokens": 800}, "requests": {"blocked": 0.05, "max_tokens": 0.1}}
    done, stats, events = _run(tmp_path, plan, n=200, jobs={**FAST, "stuck_after": "1s",
                                                            "max_enqueued_tokens": 10**9},
                               retry={**RETRY, "on": ["max_tokens"]},
                               output={**OUTPUT, "max_failed": "100%"})
    assert done.returncode == 0, done.stderr[-3000:]
    rows = read_rows(tmp_path / "out/result.jsonl")
    assert [r["key"] for r in rows] == [f"k{i:04d}" for i in range(200)]
    for row in rows:
        assert row["status"] == "ok" or row["error"]["message"].startswith("blocked: SAFETY"), row
    for said in ("job stuck: cancelling it; its unanswered requests go in a new job",
                 "the service's quota is full (429 on create): waiting for a job to finish",
                 "job output not there yet; will look again", "job finished"):
        assert said in events, said
    _created_once(stats)
