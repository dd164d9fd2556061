"""Sticky instance IDs: a process restarted on the same host gets its predecessor's ID back."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from im_infra import coord

TTL = 2

_HOLDER = """
import sys, time
from im_infra import clog, coord
clog.init(service="sticky-holder", level="WARNING")
p = coord.connect(sys.argv[1], timeout=5)
print(p.instance_for(sys.argv[2], ttl=int(sys.argv[3]), sticky=True).instance_id(), flush=True)
time.sleep(3600)
"""


def _holder(endpoints: str, service: str) -> tuple[subprocess.Popen[str], int, float]:
    """Start a process holding a sticky ID; return it, its ID and how long the claim took."""
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, endpoints, service, str(TTL)],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip().isdigit(), f"holder printed {line!r}"
    return proc, int(line), time.monotonic() - started


def _kill(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)


def test_restarted_process_reclaims_its_predecessors_id(etcd_endpoints: str, unique: str) -> None:
    first, first_id, _ = _holder(etcd_endpoints, unique)
    try:
        _kill(first)  # its lease lives on for up to TTL seconds
        with coord.connect(etcd_endpoints) as p:
            started = time.monotonic()
            again = p.instance_for(unique, ttl=TTL, sticky=True).instance_id()
            waited = time.monotonic() - started
            assert again == first_id
            assert waited <= TTL + 2

            # A live sibling on this host is waited for (it might have been a dead
            # predecessor), then gets another ID: nothing is taken while its lease lives.
            sibling, sibling_id, took = _holder(etcd_endpoints, unique)
            try:
                assert sibling_id != again
                assert took >= TTL  # it waited for our lease, which never expired
                assert p.instance_for(unique, ttl=TTL, sticky=True).current_id == again
            finally:
                _kill(sibling)
    finally:
        _kill(first)


def test_same_process_does_not_wait_for_itself(etcd_endpoints: str, unique: str) -> None:
    with coord.connect(etcd_endpoints) as a, coord.connect(etcd_endpoints) as b:
        started = time.monotonic()
        ids = [p.instance_for(unique, ttl=TTL, sticky=True).instance_id() for p in (a, b)]
        assert ids == [0, 1]  # lowest free first
        assert time.monotonic() - started < TTL
