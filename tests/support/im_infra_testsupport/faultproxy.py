"""A TCP proxy that injects faults between a client and a real server: late replies (a latency
spike after the request has reached the server) and a connection cut at the moment a chosen
request passes (after forwarding it, so the server acts on it but the reply never arrives)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator


class FaultProxy:
    """Forwards 127.0.0.1:``port`` to ``upstream`` ("host:port").

    * ``spike(seconds)``: a latency spike: no server->client data passes until ``seconds`` from
      now (requests still reach the server at once, so they run; only their replies are late);
    * ``cut_after(match)``: the next client->server chunk for which ``match(chunk)`` is true is
      forwarded, then that connection is closed both ways before the server's reply passes.
    """

    def __init__(self, upstream: str) -> None:
        host, _, port = upstream.rpartition(":")
        self._upstream = (host, int(port))
        self._held_until = 0.0
        self._match: Callable[[bytes], bool] | None = None
        self.cuts = 0
        self._socks: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def spike(self, seconds: float) -> None:
        self._held_until = time.monotonic() + seconds

    def cut_after(self, match: Callable[[bytes], bool]) -> None:
        self._match = match

    def close(self) -> None:
        with self._lock:
            socks, self._socks = self._socks, set()
        for sock in [self._listener, *socks]:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
                server = socket.create_connection(self._upstream, timeout=5)
            except OSError:
                return
            server.settimeout(None)
            with self._lock:
                self._socks.update((client, server))
            args = (client, server, threading.Event())
            threading.Thread(target=self._requests, args=args, daemon=True).start()
            threading.Thread(target=self._replies, args=args, daemon=True).start()

    def _requests(self, client: socket.socket, server: socket.socket, cut: threading.Event) -> None:
        with _closing(client, server):
            while data := client.recv(65536):
                match = self._match
                if match is not None and match(data):
                    self._match = None
                    self.cuts += 1
                    cut.set()  # no reply passes from now on
                    server.sendall(data)
                    time.sleep(0.2)  # the server acts on it before it sees the connection close
                    return
                server.sendall(data)

    def _replies(self, client: socket.socket, server: socket.socket, cut: threading.Event) -> None:
        with _closing(client, server):
            while data := server.recv(65536):
                if (held := self._held_until - time.monotonic()) > 0:
                    time.sleep(held)
                if cut.is_set():
                    return
                client.sendall(data)


@contextlib.contextmanager
def _closing(*socks: socket.socket) -> Iterator[None]:
    """Run a pump; when it ends (EOF, error, cut) shut both sockets so the peer sees it."""
    try:
        yield
    except OSError:
        pass
    finally:
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
