"""A refused connection is tried once more, then ends the call: google-genai does not retry it by every attempt."""

from __future__ import annotations

import socket
import time

import pytest

from batchflow.backends.gemini import GeminiBackend, make_client
from batchflow.errors import UnreachableError
from batchflow.libs.deadlines import deadlines
from batchflow.libs.refusals import genai_client_args, refused


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_refused_connection_is_unreachable_after_one_more_try_not_after_every_retry() -> None:
    limits = deadlines(5)  # five attempts for a timeout: 1+2+4+8 s of backoff if refusals were retried too
    backend = GeminiBackend(make_client("k", f"http://127.0.0.1:{_closed_port()}", limits), limits)
    start = time.monotonic()
    with pytest.raises(UnreachableError, match=r"get batches/x: the batch API cannot be reached: ConnectionRefused"):
        backend.poll(["batches/x"])
    assert time.monotonic() - start < 8


def test_a_refusal_and_a_name_that_does_not_exist_are_told_from_other_connect_errors() -> None:
    assert refused(ConnectionRefusedError(111, "Connection refused"))
    assert refused(socket.gaierror(socket.EAI_NONAME, "Name or service not known"))
    assert not refused(socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution"))
    assert not refused(TimeoutError("timed out"))


def test_a_client_certificate_leaves_the_transport_to_the_sdk(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOOGLE_API_USE_CLIENT_CERTIFICATE", "true")
    assert genai_client_args() is None
    monkeypatch.delenv("GOOGLE_API_USE_CLIENT_CERTIFICATE")
    assert set(genai_client_args() or {}) == {"transport"}
