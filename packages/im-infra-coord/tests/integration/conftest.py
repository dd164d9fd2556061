"""Fixtures for coord's integration tests (shared ones:
tests/support/im_infra_testsupport/fixtures.py)."""

from __future__ import annotations

import os
import selectors
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from im_infra import coord
from im_infra_testsupport.tcpproxy import TcpProxy

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
    """Processes running packages/im-infra-coord/tests/integration/workers.py; all killed when the
    test ends."""

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
