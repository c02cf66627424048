"""A TCP proxy on 127.0.0.1 that can stop answering, to put in front of an emulator (GCS, BigQuery, the batch API).

Modes, switched at any time (``proxy.mode = ...``), each applying to connections made from then on:

- ``pass``: bytes go both ways untouched;
- ``blackhole``: the connection is accepted, what the client sends is read and dropped, nothing ever comes back;
- ``stall_body``: the request goes through; of the answer, the first ``after`` bytes (the headers, say) reach the
  client, then nothing more;
- ``stall_upload``: the first ``after`` bytes the client sends go through, then the proxy stops reading, so the
  client's upload stalls half-way once the socket buffers are full;
- ``trickle``: as ``stall_body``, but past the first ``after`` bytes the answer goes on a byte every ``every``
  seconds: a peer that is never silent for long (no per-read timeout fires) and never gets anywhere.

``freeze()`` hangs every connection at once, those under way included (nothing more is read or sent either way,
new connections are accepted and hang too): a peer that stops at an arbitrary point of whatever it was doing.
``thaw()`` drops the frozen connections (nothing half-sent resumes) and passes bytes again.

Every byte passed is counted, each way: ``sent_up`` (client to target: uploads and requests) and ``sent_down``
(target to client: downloads and answers), so a benchmark or a test can see what a client moved.

Every stall is released by ``close()`` (the sockets are closed, the threads end), so a test that hangs a client
is bounded by the client's own timeout and the proxy never outlives the test.
"""

from __future__ import annotations

import select
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from urllib.parse import urlsplit

_CHUNK = 65536
_POLL = 0.2  # seconds between looks at the stop flag while a socket has nothing to read


class StallProxy:
    """Listens on a free port of 127.0.0.1 and forwards to ``target`` (``http://host:port`` or ``host:port``)."""

    def __init__(self, target: str, mode: str = "pass", after: int = 0, every: float = 0.2) -> None:
        parts = urlsplit(target if "://" in target else f"tcp://{target}")
        self.target = (parts.hostname or "127.0.0.1", int(parts.port or 80))
        self.mode, self.after, self.every = mode, after, every
        self.connections = 0  # accepted so far: a test can see that a client came
        self.sent_up = self.sent_down = 0  # bytes passed from the client to the target, and back
        self._stop = threading.Event()
        self._frozen = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(_POLL)
        self.port = int(self._listener.getsockname()[1])
        self._thread = threading.Thread(target=self._accept, name="stall-proxy", daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def close(self) -> None:
        """Every connection dropped and every thread ended: whatever was stalled is released."""
        self._stop.set()
        self._thread.join(5)
        with self._lock:
            for sock in self._sockets:
                _close(sock)
            self._sockets.clear()
        self._listener.close()

    def freeze(self) -> None:
        """Every connection, open or new, stops moving bytes from now on."""
        self._frozen.set()

    def thaw(self) -> None:
        """The frozen connections dropped, then bytes pass again (for connections made from now on)."""
        with self._lock:
            for sock in self._sockets:
                _close(sock)
            self._sockets.clear()
        self._frozen.clear()

    def _keep(self, sock: socket.socket) -> socket.socket:
        with self._lock:
            self._sockets.append(sock)
        sock.settimeout(None)  # reads wait in select() below, a send as long as it takes (close() ends it)
        return sock

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(self._keep(client), self.mode, self.after),
                             daemon=True).start()

    def _serve(self, client: socket.socket, mode: str, after: int) -> None:
        if mode == "blackhole":
            self._pump(client, None, None)
            return
        try:
            upstream = self._keep(socket.create_connection(self.target, timeout=5))
        except OSError:
            _close(client)
            return
        up_limit = after if mode == "stall_upload" else None
        down_limit = after if mode in ("stall_body", "trickle") else None
        trickle = self.every if mode == "trickle" else None
        threading.Thread(target=self._pump, args=(upstream, client, down_limit, "sent_down", trickle),
                         daemon=True).start()
        self._pump(client, upstream, up_limit, "sent_up")

    def counted(self) -> tuple[int, int]:
        """(bytes up, bytes down) so far."""
        with self._lock:
            return self.sent_up, self.sent_down

    def _count(self, way: str, n: int) -> None:
        with self._lock:
            setattr(self, way, getattr(self, way) + n)

    def _pump(self, src: socket.socket, dst: socket.socket | None, limit: int | None, way: str = "",
              trickle: float | None = None) -> None:
        """``src`` to ``dst`` (None: dropped) until either closes; past ``limit`` bytes, ``src`` is no longer read
        (``trickle``: read a byte at a time, one every ``trickle`` seconds)."""
        sent = 0
        while not self._stop.is_set():
            past = limit is not None and sent >= limit
            if self._frozen.is_set() or (past and trickle is None):
                self._stop.wait(_POLL)  # stalled: nothing read, nothing sent, until close()
                continue
            if past and trickle is not None and self._stop.wait(trickle):
                break
            try:
                if not select.select([src], [], [], _POLL)[0]:
                    continue
                data = src.recv(1 if past else _CHUNK if limit is None else min(_CHUNK, limit - sent))
            except (OSError, ValueError):  # closed under us (ValueError: select on a closed socket)
                break
            if not data:
                break
            if dst is not None:
                try:
                    dst.sendall(data)
                except OSError:
                    break
            sent += len(data)
            if way:
                self._count(way, len(data))
        if dst is not None:
            _close(dst)
        _close(src)


def _close(sock: socket.socket) -> None:
    with suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


@contextmanager
def stall_proxy(target: str, mode: str = "pass", after: int = 0, every: float = 0.2) -> Iterator[StallProxy]:
    """A ``StallProxy`` for the length of a ``with`` block, closed (every stall released) on the way out."""
    proxy = StallProxy(target, mode, after, every)
    try:
        yield proxy
    finally:
        proxy.close()
