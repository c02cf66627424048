"""Every remote call is bounded: the clients, given their deadlines by libs/deadlines.py, give up on a hung peer."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from support.stall_proxy import stall_proxy

from batchflow.backends.gemini import GeminiBackend, make_client
from batchflow.errors import CallTimedOut, InputError
from batchflow.libs.deadlines import CALL, CONNECT, ENV, bounded, deadlines
from batchflow.libs.storage import storage_options


def test_the_defaults_bound_connect_and_a_call_without_a_byte() -> None:
    d = deadlines(environ={})
    assert (d.connect, d.call, d.attempts) == (CONNECT, CALL, 3)


def test_one_setting_changes_every_deadline() -> None:
    d = deadlines(2, environ={ENV: "1.5"})
    assert (d.connect, d.call, d.bigquery_job, d.attempts) == (1.5, 1.5, 1.5, 2)
    assert d.worst_call == pytest.approx(2 * 3.0 + 2)


@pytest.mark.parametrize("text", ["soon", "0", "-3"])
def test_a_setting_that_is_not_a_positive_number_is_refused_naming_it(text: str) -> None:
    with pytest.raises(InputError, match=ENV):
        deadlines(environ={ENV: text})


def test_google_genai_behind_a_peer_that_never_answers_times_out_naming_the_call_and_host(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, "0.5")
    limits = deadlines(2)
    with stall_proxy("127.0.0.1:9", mode="blackhole") as proxy:
        backend = GeminiBackend(make_client("k", proxy.url, limits), limits)
        start = time.monotonic()
        with pytest.raises(CallTimedOut, match=rf"get batches/x: no answer from {proxy.address} within 0.5 s"):
            backend.poll(["batches/x"])
        assert time.monotonic() - start < 10
        assert proxy.connections == 2  # retry.call_attempts: the timed-out call was tried twice in all


def test_google_genai_answering_headers_then_stalling_the_body_times_out(
        emulator_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, "0.5")
    limits = deadlines(1)
    with stall_proxy(emulator_url, mode="stall_body", after=20) as proxy:
        backend = GeminiBackend(make_client("k", proxy.url, limits), limits)
        with pytest.raises(CallTimedOut, match=r"models\.get"):
            backend.model_problem("gemini-2.5-flash", "generate")


@pytest.mark.gcs
def test_gcsfs_given_its_storage_options_times_out_on_a_peer_that_never_answers(
        gcs_emulator: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import gcsfs

    monkeypatch.setenv(ENV, "0.5")
    d = deadlines(2)
    with stall_proxy(gcs_emulator, mode="blackhole") as proxy:
        fs = gcsfs.GCSFileSystem(endpoint_url=proxy.url, skip_instance_cache=True, **storage_options("gs://b"))
        start = time.monotonic()
        with pytest.raises(CallTimedOut, match=f"info gs://b/x: no answer from {proxy.address}"), \
                bounded("info gs://b/x", proxy.address, d):
            fs.info("b/x", timeout=d.worst_call)  # fsspec's sync wrapper bounds gcsfs' own six attempts
        assert time.monotonic() - start < d.worst_call + 2
        assert proxy.connections >= 2  # each attempt gave up on its own half second, and gcsfs tried again


@pytest.mark.gcs
def test_gcsfs_put_file_stalled_half_way_is_bounded_by_progress(
        gcs_emulator: str, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import gcsfs

    from batchflow.libs.deadlines import transfer_timeout

    monkeypatch.setenv(ENV, "0.5")
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * (8 << 20))  # more than the socket buffers hold: the client's send blocks
    with stall_proxy(gcs_emulator, mode="stall_upload", after=64 << 10) as proxy:
        fs = gcsfs.GCSFileSystem(endpoint_url=proxy.url, skip_instance_cache=True, **storage_options("gs://b"))
        start = time.monotonic()
        with pytest.raises(CallTimedOut), bounded("upload big.bin", proxy.address, deadlines()):
            fs.put_file(str(big), f"{bucket}/big.bin", timeout=transfer_timeout(deadlines(), 1 << 10))
        assert time.monotonic() - start < 10
