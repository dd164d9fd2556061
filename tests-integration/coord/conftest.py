"""Fixtures for coord's integration tests (shared ones: tests-integration/conftest.py)."""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from im_infra import coord

WORKERS = Path(__file__).with_name("workers.py")


@pytest.fixture
def unique() -> str:
    """A name no other test (or earlier run) uses: prefix keys, services and locks with it."""
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
def provider(etcd_endpoints: str, unique: str) -> Iterator[coord.EtcdProvider]:
    with coord.connect(etcd_endpoints, service=f"{unique}-svc", env=unique, timeout=3) as p:
        yield p
        # leave nothing behind on the shared etcd
        p.client.delete(p.config.root, prefix=True)


def _wait_for(check: Callable[[], bool], timeout: float, what: str) -> float:
    start = time.monotonic()
    deadline = start + timeout
    while time.monotonic() < deadline:
        if check():
            return time.monotonic() - start
        time.sleep(0.05)
    pytest.fail(f"{what}: not within {timeout}s")


@pytest.fixture
def wait_for() -> Callable[[Callable[[], bool], float, str], float]:
    """``wait_for(check, timeout, what)``: poll until true, return the seconds it took, fail the
    test on timeout."""
    return _wait_for


class Workers:
    """Processes running tests-integration/coord/workers.py; all killed when the test ends."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, *args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, str(WORKERS), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            env=dict(os.environ),
        )
        self.procs.append(proc)
        return proc

    def read_line(self, proc: subprocess.Popen[str], timeout: float) -> str:
        """The worker's next stdout line (fails the test if it does not come in time)."""
        assert proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        try:
            ready = sel.select(timeout)
        finally:
            sel.close()
        if not ready:
            proc.kill()
            _, err = proc.communicate(timeout=5)
            pytest.fail(f"worker printed nothing within {timeout}s; stderr:\n{err[-3000:]}")
        line = proc.stdout.readline()
        if not line:
            _, err = proc.communicate(timeout=5)
            pytest.fail(f"worker exited ({proc.returncode}); stderr:\n{err[-3000:]}")
        return line.strip()

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate(timeout=10)


@pytest.fixture
def workers() -> Iterator[Workers]:
    w = Workers()
    yield w
    w.kill_all()


class TcpProxy:
    """Forwards 127.0.0.1:``port`` to ``upstream`` ("host:port"): one client's path to etcd, which
    ``cut()`` severs (connections closed, new ones refused) and ``restore()`` reopens, while
    etcd itself stays up for everyone else (a network partition of one process). ``stall()``
    blackholes the path instead: connections stay open and new ones are accepted, but nothing
    is forwarded (and nothing is lost: like TCP retransmitting) until ``resume()``."""

    def __init__(self, upstream: str) -> None:
        host, _, port = upstream.rpartition(":")
        self.upstream = (host, int(port))
        self.port = 0
        self._socks: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._flowing = threading.Event()
        self._flowing.set()
        self.restore()

    def stall(self) -> None:
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            socks, self._socks = self._socks, set()
        for sock in [listener, *socks]:
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            try:
                server = socket.create_connection(self.upstream, timeout=5)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    server.close()
                    return
                self._socks.update((client, server))
            for src, dst in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                self._flowing.wait()  # stalled: hold the bytes (the kernel buffers the rest)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def tcp_proxy() -> Iterator[Callable[[str], TcpProxy]]:
    """``tcp_proxy("127.0.0.1:2379")`` -> a :class:`TcpProxy`; all cut when the test ends."""
    proxies: list[TcpProxy] = []

    def make(upstream: str) -> TcpProxy:
        proxy = TcpProxy(upstream)
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        proxy.resume()
        proxy.cut()
