"""Ctrl-C and SIGTERM end a run within seconds, even with a call hung on a peer, the state left consistent."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pexpect
import pytest
from support.helpers import read_rows, write_jsonl, write_spec
from support.stall_proxy import stall_proxy

from batchflow.emulator import start_in_thread


def _spec(tmp_path: Path, base_url: str) -> Path:
    write_jsonl(tmp_path / "data/in.jsonl", [{"id": f"r{i}", "text": f"t{i}"} for i in range(4)])
    return write_spec(tmp_path, backend={"type": "local", "base_url": base_url})


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "BATCHFLOW_CALL_TIMEOUT"}  # the default: 60 s a call
    return {**env, "HOME": str(tmp_path), "PYTHONUNBUFFERED": "1"}


def _run_hung_on(proxy: Any, spec: Path, tmp_path: Path) -> subprocess.Popen[str]:
    """``batchflow run`` as a process, returned once its first call is out to the peer that never answers."""
    run = subprocess.Popen([sys.executable, "-m", "batchflow", "run", str(spec)], env=_env(tmp_path),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while proxy.connections == 0:
        assert run.poll() is None, run.communicate()
        time.sleep(0.1)
    return run


def _state_consistent(tmp_path: Path) -> None:
    state = tmp_path / ".batchflow/t/state.json"
    if state.exists():
        json.loads(state.read_text())  # whole: written atomically, never half
    assert not list((tmp_path / ".batchflow/t").glob(".state.*.tmp"))


def test_ctrl_c_on_a_terminal_ends_a_run_hung_on_its_peer_within_seconds(tmp_path: Path) -> None:
    with stall_proxy("127.0.0.1:9", mode="blackhole") as proxy:
        spec = _spec(tmp_path, proxy.url)
        # the run's call is out, and the peer will not answer it for 60 s
        child, took = _ctrl_c_on_a_terminal(spec, tmp_path, lambda: proxy.connections > 0, settle=0.5)
    assert took < 5
    assert child.exitstatus == 130, child.before
    assert "interrupted: the state is saved" in str(child.before)
    _state_consistent(tmp_path)


def test_sigterm_ends_a_run_as_ctrl_c_does(tmp_path: Path) -> None:
    with stall_proxy("127.0.0.1:9", mode="blackhole") as proxy:
        spec = _spec(tmp_path, proxy.url)
        run = _run_hung_on(proxy, spec, tmp_path)
        try:
            time.sleep(0.5)
            start = time.monotonic()
            run.send_signal(signal.SIGTERM)
            _, stderr = run.communicate(timeout=5)
            took = time.monotonic() - start
        finally:
            run.kill()
    assert took < 5 and run.returncode == 130, stderr
    assert "interrupted: the state is saved" in stderr
    _state_consistent(tmp_path)


@pytest.mark.parametrize("second", [signal.SIGINT, signal.SIGTERM])
def test_a_second_interrupt_ends_the_process_at_once(tmp_path: Path, second: signal.Signals) -> None:
    with stall_proxy("127.0.0.1:9", mode="blackhole") as proxy:
        spec = _spec(tmp_path, proxy.url)
        run = _run_hung_on(proxy, spec, tmp_path)
        try:
            run.send_signal(signal.SIGINT)
            run.send_signal(second)
            run.communicate(timeout=5)
        finally:
            run.kill()
    assert run.returncode == 130


def test_ctrl_c_on_a_terminal_during_a_collection_ends_the_run_within_seconds(tmp_path: Path) -> None:
    """The job's results download stalls half-way (the fault plan): the run is collecting, a call out for 60 s;
    Ctrl-C ends it in under 5 s, the state whole, and the next run collects the job, creating nothing again."""
    plan = tmp_path / "hangs.yaml"
    plan.write_text("hangs: {download: {kind: stall_body, calls: [1]}}\n", encoding="utf-8")
    with start_in_thread(tmp_path / "emu", job_seconds=0.1, faults=plan) as emulator:
        spec = _spec(tmp_path, emulator.base_url)
        child, took = _ctrl_c_on_a_terminal(  # once the download is hung
            spec, tmp_path, lambda: bool(emulator.engine.faults.counters().get("http_stall_body")), settle=0.3)
        assert took < 5
        assert child.exitstatus == 130, child.before
        assert "interrupted: the state is saved" in str(child.before)
        _state_consistent(tmp_path)
        again = subprocess.run([sys.executable, "-m", "batchflow", "run", str(spec)], env=_env(tmp_path),
                               capture_output=True, text=True, timeout=60)
        stats = emulator.engine.stats()
    assert again.returncode == 0, again.stderr
    assert list(stats["creates_by_display_name"].values()) == [1], stats
    assert [r["status"] for r in read_rows(tmp_path / "out/result.jsonl")] == ["ok"] * 4


def _ctrl_c_on_a_terminal(spec: Path, tmp_path: Path, ready: Callable[[], bool],
                          settle: float) -> tuple[pexpect.spawn, float]:
    """``run`` on a pty, interrupted with Ctrl-C ``settle`` s after ``ready()`` holds: the ended child, and the
    seconds from the Ctrl-C to its end."""
    child = pexpect.spawn(sys.executable, ["-m", "batchflow", "run", str(spec)], env=_env(tmp_path),
                          encoding="utf-8", timeout=30)
    try:
        deadline = time.monotonic() + 30
        while not ready():
            assert child.isalive() and time.monotonic() < deadline, child.read()
            time.sleep(0.1)
        time.sleep(settle)
        start = time.monotonic()
        child.sendintr()
        child.expect(pexpect.EOF, timeout=5)
        return child, time.monotonic() - start
    finally:
        child.close(force=True)
