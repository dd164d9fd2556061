"""Recovery after etcd faults (issue #15, items 5-7), on etcd processes the tests own:
lost leases revoked once etcd answers again, calls failing over quickly when the leader is
killed, and watches noticing a blackholed connection through keepalive pings."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from im_infra import coord
from im_infra.coord import CoordError
from im_infra.coord._internal.watch import WatchLoop


def test_lost_lock_lease_is_revoked_when_etcd_returns(
    etcd_cluster_factory: Any, wait_for: Any, unique: str
) -> None:
    """etcd stops while a lock is held; the holder declares the lease lost. When etcd comes
    back, etcd restarts every lease's TTL, so unless the holder revokes its lost lease the dead
    lock key blocks everyone for another whole TTL."""
    ttl = 8
    cluster = etcd_cluster_factory(1)
    ep = cluster.endpoints
    with coord.connect(ep, service=unique, timeout=1) as holder:
        lock = holder.lock.acquire(unique, ttl=ttl, timeout=5)
        cluster.stop(0)
        assert lock._lease.wait_lost(ttl), "the holder never declared its lease lost"
        assert lock.lost
        cluster.start(0)
        back = time.monotonic()
        with coord.connect(ep, timeout=2) as contender:
            taken = contender.lock.acquire(unique, ttl=ttl, timeout=2 * ttl)
            took = time.monotonic() - back
            print(f"second contender got the lock {took:.2f}s after etcd answered again")
            # without the revocation: about a whole TTL (etcd restarted the lease's clock)
            assert took < ttl / 4, f"the dead lock key blocked the lock for {took:.2f}s"
            with pytest.raises(coord.LockLost):
                lock.release()
            taken.release()


def _put_loop(
    p: coord.EtcdProvider, key: str, stop: threading.Event, out: list[tuple[float, str]]
) -> None:
    n = 0
    while not stop.is_set():
        n += 1
        start = time.monotonic()
        try:
            p.client.put(key, str(n).encode())
            result = "ok"
        except CoordError as exc:
            result = f"{type(exc).__name__}: {exc}"
        out.append((time.monotonic() - start, result))


@pytest.mark.parametrize("via", ["leader", "follower"])
def test_leader_killed_calls_fail_over_within_a_second(
    etcd_cluster_factory: Any, unique: str, via: str
) -> None:
    """3 members, the leader SIGKILLed while calls are in flight (through the leader itself, or
    through a follower that forwards to it): the election takes ~0.1 s here, so no call may
    stall for the whole call timeout; each attempt is bounded below it and fails over."""
    cluster = etcd_cluster_factory(3)
    leader = cluster.leader_index()
    first = leader if via == "leader" else (leader + 1) % 3
    order = [cluster.endpoints[(first + i) % 3] for i in range(3)]
    with coord.connect(order, timeout=5) as p:
        p.client.put(f"/{unique}/warm", b"1")
        assert p.client.current_endpoint == order[0]
        for round_ in range(3):
            leader = cluster.leader_index()
            calls: list[tuple[float, str]] = []
            stop = threading.Event()
            workers = [
                threading.Thread(target=_put_loop, args=(p, f"/{unique}/k{i}", stop, calls))
                for i in range(4)
            ]
            for w in workers:
                w.start()
            time.sleep(0.3)
            cluster.kill(leader)
            time.sleep(2.0)
            stop.set()
            for w in workers:
                w.join(10)
            cluster.start(leader)
            failed = [r for _, r in calls if r != "ok"]
            slowest = max(d for d, _ in calls)
            print(f"round {round_}: {len(calls)} calls, slowest {slowest:.2f}s, {failed[:3]}")
            assert failed == []
            # ~1.0 s measured (the default attempt_timeout, then the retry on a live member);
            # 5.0 s (the whole call timeout) without the per-attempt bound. Slack for load.
            assert slowest < 2.0, f"a call stalled {slowest:.2f}s (call timeout 5s)"


def test_blackholed_watch_notices_within_keepalive_and_misses_nothing(
    etcd_endpoints: str, unique: str, tcp_proxy: Any, wait_for: Any
) -> None:
    """The watcher's path to etcd is blackholed (nothing forwarded, nothing closed) after the
    stream was idle for a while: gRPC keepalive pings must notice the dead link within about
    keepalive_time + keepalive_timeout, and once the path is back the watch resumes from the
    last revision + 1, so the changes made meanwhile and after are all seen, in order."""
    proxy = tcp_proxy(etcd_endpoints.split(",")[0])
    prefix = f"/{unique}/"
    seen: list[int] = []
    with (
        coord.connect([proxy.endpoint], timeout=2) as watcher,
        coord.connect(etcd_endpoints, timeout=2) as writer,
    ):
        loop = WatchLoop(
            watcher.client,
            prefix,
            prefix=True,
            on_events=lambda evs: seen.extend(int(e.kv.value) for e in evs),
            resync=lambda: writer.client.range(prefix, prefix=True).revision,
            name=f"test:{unique}",
        ).start()
        try:
            assert loop.connected.wait(5)
            writer.client.put(f"{prefix}k", b"1")
            wait_for(lambda: seen == [1], 5, "first change")
            # idle long enough to use up the pings gRPC sends without data by default (2)
            time.sleep(3 * watcher.client.keepalive_time)
            proxy.stall()
            stalled = time.monotonic()
            writer.client.put(f"{prefix}k", b"2")
            writer.client.put(f"{prefix}k", b"3")
            limit = watcher.client.keepalive_time + watcher.client.keepalive_timeout + 3
            took = wait_for(lambda: not loop.connected.is_set(), limit, "dead link noticed")
            print(f"blackholed link noticed after {took:.2f}s (limit {limit:.0f}s)")
            assert seen == [1]
            proxy.resume()
            writer.client.put(f"{prefix}k", b"4")
            wait_for(lambda: seen == [1, 2, 3, 4], 15, "every change, in order")
            print(f"caught up {time.monotonic() - stalled:.2f}s after the stall began")
        finally:
            loop.stop()


def test_lock_released_while_etcd_is_away_is_free_once_etcd_returns(
    etcd_cluster_factory: Any, unique: str
) -> None:
    """release() cannot delete the key while etcd is down; the key must not then stay alive
    with the locker's session lease (kept alive for the locker's other locks) for good."""
    ttl = 8
    cluster = etcd_cluster_factory(1)
    ep = cluster.endpoints
    with coord.connect(ep, service=unique, timeout=1) as holder:
        lock = holder.lock.acquire(unique, ttl=ttl, timeout=5)
        cluster.stop(0)
        lock.release()  # the lease is not lost yet: no LockLost, but the delete fails
        cluster.start(0)
        back = time.monotonic()
        with coord.connect(ep, timeout=2) as contender:
            taken = contender.lock.acquire(unique, ttl=ttl, timeout=3 * ttl)
            took = time.monotonic() - back
            print(f"lock free {took:.2f}s after etcd answered again")
            assert took < ttl / 4, f"the released lock stayed blocked for {took:.2f}s"
            taken.release()
