"""The HTTP facade: a stdlib ThreadingHTTPServer speaking HTTP/1.1 keep-alive in front of the engine.

Every request goes through `_Handler._dispatch`, the one place where calls are counted and where a fault plan
may answer instead of the engine, or hang (hold the connection, answering nothing more, until the server stops).
"""

from __future__ import annotations

import os
import socketserver
import sys
import threading
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast
from urllib.parse import parse_qsl, urlsplit

import orjson

from batchflow.emulator import routes
from batchflow.emulator.engine import Emulator
from batchflow.emulator.wire.errors import ApiError


class EmulatorServer(ThreadingHTTPServer):
    """A threading HTTP server that carries the engine its handlers call."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], engine: Emulator) -> None:
        self.engine = engine
        self.stopping = threading.Event()  # set when the server stops: every hung handler lets go
        super().__init__(address, _Handler)

    def shutdown(self) -> None:
        """Release the hung handlers, then stop serving (a hung call must not outlive the emulator)."""
        self.stopping.set()
        super().shutdown()

    def server_close(self) -> None:
        self.stopping.set()
        super().server_close()

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host's FQDN, which can stall for seconds on a machine
        # without DNS; the emulator never needs that name.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else small replies wait ~40 ms for delayed ACKs
    server_version = "batchflow-emulator"

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the per-request log line on stderr."""

    def _dispatch(self, method: str) -> None:
        engine = cast(EmulatorServer, self.server).engine
        url = urlsplit(self.path)
        found = routes.match(method, url.path)
        route, params, version = found if found else (routes.UNKNOWN, {}, "")
        call = self._call(engine, params, dict(parse_qsl(url.query)), version)
        if call is None:
            return
        stall = engine.faults.hang(route.endpoint)
        if stall == "stall_upload":  # half the body read, then nothing: the call never takes effect
            if call.stream is not None:
                call.stream.read(call.length // 2)
            self._hold()
            return
        if not route.streams_body:
            call.read_body()
        engine.record_call(route.endpoint)
        if stall == "hang":  # the request read, never answered
            self._hold()
            return
        fault = engine.faults.request_fault(route.endpoint)
        try:
            if fault is not None and not fault.after:
                raise fault.error
            reply = route.fn(call)
            if fault is not None:  # `after`: the call took effect, yet the client is told it failed
                raise fault.error
        except ApiError as exc:
            reply = routes.Reply(exc.code, exc.body())
        except Exception as exc:  # an emulator bug must still answer in Google's shape, and be visible
            traceback.print_exc(file=sys.stderr)
            reply = routes.Reply(500, ApiError(500, "INTERNAL", f"Emulator error: {exc!r}").body())
        if fault is not None and route.streams_body:
            # an upload chunk answered without this header is retried by the SDK after 1, 2, 4 s sleeps
            reply.headers["X-Goog-Upload-Status"] = "final"
        if call.length:  # a body left unread would be parsed as the next request on this connection
            self.close_connection = True
        self._send(reply, stall_body=stall == "stall_body")

    def _call(self, engine: Emulator, params: dict[str, str], query: dict[str, str],
              version: str) -> routes.Call | None:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            self.close_connection = True
            self._send(routes.Reply(411, ApiError(411, "LENGTH_REQUIRED", "Content-Length is required").body()))
            return None
        host = self.headers.get("Host") or _base_host(cast(EmulatorServer, self.server))
        return routes.Call(engine=engine, params=params, query=query, version=version,
                           headers={k.lower(): v for k, v in self.headers.items()}, base_url=f"http://{host}",
                           stream=self.rfile, length=int(self.headers.get("Content-Length") or 0))

    def _hold(self) -> None:
        """Answer nothing more until the server stops, then drop the connection."""
        self.close_connection = True
        cast(EmulatorServer, self.server).stopping.wait()

    def _send(self, reply: routes.Reply, stall_body: bool = False) -> None:
        if reply.file is not None:
            self._send_file(reply, stall_body)
            return
        body = b"" if reply.json is None else orjson.dumps(reply.json)
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if body:
            self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if stall_body:  # the headers and half the body, then nothing
            self.wfile.write(body[:len(body) // 2])
            self._hold()
            return
        self.wfile.write(body)

    def _send_file(self, reply: routes.Reply, stall_body: bool = False) -> None:
        assert reply.file is not None
        try:
            f = open(reply.file, "rb")  # noqa: SIM115 - closed below; the open itself may race a delete
        except FileNotFoundError:
            self._send(routes.Reply(404, ApiError(404, "NOT_FOUND", "File data not found.").body()))
            return
        with f:
            size = os.fstat(f.fileno()).st_size
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(size))
            self.end_headers()
            self.connection.sendfile(f, 0, size // 2 if stall_body else size)  # by the kernel: no copy in Python
            if stall_body:
                self._hold()


def _base_host(server: EmulatorServer) -> str:
    host, port = server.server_address[:2]
    return f"{host!s}:{port}"
