"""httpx, as google-genai's client uses it: a refused connection tried once more, then handed back as final.

google-genai retries every ``httpx.ConnectError`` itself (``HttpRetryOptions``: ``retry.call_attempts`` tries,
1 s, 2 s ... apart, each with up to a second of jitter). That is right for a connection that timed out, but a
refused one (nothing listens there: a wrong ``base_url``) or a host name that does not exist answers the same
way every time, so a run took ~13 s to say "cannot be reached". The transport given to the SDK's own client
(``HttpOptions.client_args``) tries such a connection once more at once, then raises ``ConnectionRefused``,
a transport error google-genai does not retry; ``backends/sdk.py`` reads it as "cannot be reached".
A connect timeout is untouched: it stays a ``ConnectTimeout`` the SDK retries by ``retry.call_attempts``.
"""

from __future__ import annotations

import os
import socket
import ssl
import time
from typing import Any

import httpx

_PAUSE = 0.2  # seconds before the one more try (a server restarting may be listening by then)
# google-auth's variable for a client certificate: the SDK then builds its own mTLS context, left to it
_CLIENT_CERT_ENV = "GOOGLE_API_USE_CLIENT_CERTIFICATE"


class ConnectionRefused(httpx.NetworkError):
    """Nothing accepted the connection, twice: not an ``httpx.ConnectError``, so google-genai does not retry it."""


def refused(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is a refused connection or a host name that does not exist."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, ConnectionRefusedError):
            return True
        if isinstance(cause, socket.gaierror) and cause.errno == socket.EAI_NONAME:
            return True
        cause = cause.__cause__ or cause.__context__
    return False


class RefusedOnce(httpx.BaseTransport):
    """``inner``, with a refused connection tried once more and then raised as ``ConnectionRefused``."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self._inner = inner

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return self._inner.handle_request(request)
        except httpx.ConnectError as exc:
            if not refused(exc):
                raise
        time.sleep(_PAUSE)  # nothing was sent on a refused connection: the request is whole to send again
        try:
            return self._inner.handle_request(request)
        except httpx.ConnectError as exc:
            if not refused(exc):
                raise
            raise ConnectionRefused(str(exc), request=request) from exc

    def close(self) -> None:
        self._inner.close()


def genai_client_args() -> dict[str, Any] | None:
    """``HttpOptions.client_args`` for google-genai's sync httpx client: its transport, verifying TLS as the SDK
    does by default (certifi, or ``SSL_CERT_FILE`` / ``SSL_CERT_DIR``); None under a client certificate, whose
    mTLS context the SDK builds itself."""
    if os.environ.get(_CLIENT_CERT_ENV, "").strip().lower() == "true":
        return None
    import certifi

    context = ssl.create_default_context(cafile=os.environ.get("SSL_CERT_FILE", certifi.where()),
                                         capath=os.environ.get("SSL_CERT_DIR"))
    return {"transport": RefusedOnce(httpx.HTTPTransport(verify=context))}
