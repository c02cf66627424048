from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from batchflow.errors import LockedError, StateError
from batchflow.state.state import Job, Shard, State, StateStore


def _sample() -> State:
    job = Job(n=1, input="shards/shard-00000.jsonl", count=3, digest="ab", display_name="x-s00000-j1-ab")
    shard = Shard(0, 3, 99, "ab", "shards/a", "shards/b", jobs=[job])
    return State("demo", "fp", records=3, created_at=1.0, shards=[shard])


def test_state_round_trips_through_the_file(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.save(_sample())
    assert store.load() == _sample()
    assert not list(tmp_path.glob(".state.*")), "no temp file is left behind"


def test_no_state_yet_loads_as_none(tmp_path: Path) -> None:
    assert StateStore(tmp_path / "nothing").load() is None


@pytest.mark.parametrize(("content", "message"), [
    ('{"format": 1, "shards": [', "corrupt"),
    ("[1, 2]", "not a batchflow state file"),
    ('{"format": 99, "shards": []}', "newer than this batchflow"),
    ('{"format": 1, "shards": [{"index": 0}]}', "corrupt"),
])
def test_a_bad_state_file_is_a_one_line_state_error(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "state.json").write_text(content)
    with pytest.raises(StateError, match=message) as info:
        StateStore(tmp_path).load()
    assert "\n" not in str(info.value)
    assert str(tmp_path / "state.json") in str(info.value)


def test_a_second_holder_is_refused_naming_the_first(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    with store.lock(), pytest.raises(LockedError, match=f"pid {os.getpid()}"):
        StateStore(tmp_path).lock().__enter__()
    with store.lock():  # released on exit: taken again at once
        pass


def test_the_lock_of_a_killed_process_is_free_at_once(tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from batchflow.state.state import StateStore\n"
        f"lock = StateStore(Path({str(tmp_path)!r})).lock(); lock.__enter__(); print('held', flush=True); "
        "time.sleep(60)")], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    with pytest.raises(LockedError, match=f"pid {holder.pid}"):
        StateStore(tmp_path).lock().__enter__()
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    holder.stdout.close()
    deadline = time.time() + 5
    while True:
        try:
            with StateStore(tmp_path).lock():
                info = json.loads((tmp_path / "lock.json").read_text())
                assert info["pid"] == os.getpid()
            break
        except LockedError:
            assert time.time() < deadline, "the dead holder's lock was never released"
            time.sleep(0.05)
