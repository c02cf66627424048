"""httpx, as google-genai's client uses it: a refused connection tried once more, then handed back as final.

google-genai retries every ``ConnectError`` itself (``HttpRetryOptions``: ``retry.call_attempts`` tries,
1 s, 2 s ... apart, each with up to a second of jitter). That is right for a connection that timed out, but a
refused one (nothing listens there: a wrong ``base_url``) or a host name that does not exist answers the same
way every time, so a run took ~13 s to say "cannot be reached". The transport given to the SDK's own client
(``HttpOptions.client_args``) tries such a connection once more at once, then raises ``ConnectionRefused``,
a transport error google-genai does not retry; ``backends/sdk.py`` reads it as "cannot be reached".
A connect timeout is untouched: it stays a ``ConnectTimeout`` the SDK retries by ``retry.call_attempts``.

google-genai 2.x runs on httpx; 3.x runs on httpx2, a fork of httpx under its own import name whose classes are
not httpx's. The transport is built from the one the installed SDK would pick (``http_module``), as the SDK
picks it: ``GOOGLE_GENAI_HTTP_CLIENT`` first, then its default.
"""

from __future__ import annotations

import functools
import importlib
import os
import socket
import ssl
import time
from types import ModuleType
from typing import Any

_PAUSE = 0.2  # seconds before the one more try (a server restarting may be listening by then)
# google-auth's variable for a client certificate: the SDK then builds its own mTLS context, left to it
_CLIENT_CERT_ENV = "GOOGLE_API_USE_CLIENT_CERTIFICATE"


def http_module() -> ModuleType:
    """httpx or httpx2: the HTTP library the installed google-genai builds its sync client on."""
    from google.genai import _api_client  # no public name says which one it picked

    pick = getattr(_api_client, "_get_http_client_backend", None)  # google-genai 3.x; 2.x knows httpx only
    return importlib.import_module(pick() if pick is not None else "httpx")


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


@functools.cache
def _classes(http: ModuleType) -> tuple[type, type]:
    """``ConnectionRefused`` and ``RefusedOnce``, subclassing the classes of ``http`` (httpx or httpx2)."""

    class ConnectionRefused(http.NetworkError):  # type: ignore[name-defined,misc]
        """Nothing accepted the connection, twice: not a ``ConnectError``, so google-genai does not retry it."""

    class RefusedOnce(http.BaseTransport):  # type: ignore[name-defined,misc]
        """``inner``, with a refused connection tried once more and then raised as ``ConnectionRefused``."""

        def __init__(self, inner: Any) -> None:
            self._inner = inner

        def handle_request(self, request: Any) -> Any:
            try:
                return self._inner.handle_request(request)
            except http.ConnectError as exc:
                if not refused(exc):
                    raise
            time.sleep(_PAUSE)  # nothing was sent on a refused connection: the request is whole to send again
            try:
                return self._inner.handle_request(request)
            except http.ConnectError as exc:
                if not refused(exc):
                    raise
                raise ConnectionRefused(str(exc), request=request) from exc

        def close(self) -> None:
            self._inner.close()

    return ConnectionRefused, RefusedOnce


def _tls_context(http: ModuleType) -> ssl.SSLContext:
    """TLS verified as the SDK verifies it by default: ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` when set, else
    httpx2's own context (the system's trust store) or certifi's bundle under httpx."""
    cafile, capath = os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR")
    if not (cafile or capath) and http.__name__ == "httpx2":
        return http.create_ssl_context()  # type: ignore[no-any-return]
    if not cafile:
        import certifi

        cafile = certifi.where()
    return ssl.create_default_context(cafile=cafile, capath=capath)


def genai_client_args() -> dict[str, Any] | None:
    """``HttpOptions.client_args`` for google-genai's sync client: its transport, verifying TLS as the SDK does;
    None under a client certificate, whose mTLS context the SDK builds itself."""
    if os.environ.get(_CLIENT_CERT_ENV, "").strip().lower() == "true":
        return None
    http = http_module()
    _, refused_once = _classes(http)
    return {"transport": refused_once(http.HTTPTransport(verify=_tls_context(http)))}
