"""Service registry against the stack's etcd."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from im_infra import coord
from im_infra.coord import NoInstanceAvailable, ServiceInstance


def test_register_discover_pick_deregister(
    provider: coord.EtcdProvider, etcd_endpoints: str, unique: str, wait_for: Any
) -> None:
    reg = provider.registry
    a = ServiceInstance(unique, "a", "10.0.0.1:9000", {"zone": "z1"})
    b = ServiceInstance(unique, "b", "10.0.0.2:9000")
    assert reg.discover(unique) == []
    with pytest.raises(NoInstanceAvailable, match=unique):
        reg.pick(unique)
    reg.register(a, ttl=3)
    reg.register(b, ttl=3)
    wait_for(lambda: len(reg.discover(unique)) == 2, 5, "both instances in the cache")
    assert reg.discover(unique) == [a, b]
    assert [reg.pick(unique).id for _ in range(4)] in (["a", "b", "a", "b"], ["b", "a", "b", "a"])
    # another client sees them too
    with coord.connect(etcd_endpoints) as other:
        assert other.registry.discover(unique) == [a, b]
        assert reg.deregister(a) is True
        wait_for(lambda: other.registry.discover(unique) == [b], 5, "deregistration seen")
    assert reg.deregister(unique, "a") is False
    assert reg.registered() == [b]


def test_watch_reports_full_list(provider: coord.EtcdProvider, unique: str) -> None:
    reg = provider.registry
    lists: list[list[str]] = []
    got = threading.Event()

    def on_change(instances: list[ServiceInstance]) -> None:
        lists.append([i.id for i in instances])
        got.set()

    handle = reg.watch(unique, on_change)
    assert got.wait(5)
    assert lists == [[]]
    for n in ("x", "y"):
        got.clear()
        reg.register(ServiceInstance(unique, n, "h:1"), ttl=3)
        assert got.wait(5)
    got.clear()
    reg.deregister(unique, "x")
    assert got.wait(5)
    handle.cancel()
    assert lists == [[], ["x"], ["x", "y"], ["y"]]


def test_killed_process_disappears_after_ttl(
    provider: coord.EtcdProvider, etcd_endpoints: str, unique: str, workers: Any, wait_for: Any
) -> None:
    proc = workers.start("register", etcd_endpoints, unique, "w1", "2")
    assert workers.read_line(proc, 20) == "registered"
    assert [i.id for i in provider.registry.discover(unique)] == ["w1"]
    proc.kill()
    took = wait_for(lambda: provider.registry.discover(unique) == [], 4, "dead instance removed")
    assert took <= 3.0  # TTL (2 s) + 1 s


def test_lease_loss_reregisters_by_itself(
    provider: coord.EtcdProvider, etcd_endpoints: str, unique: str, wait_for: Any
) -> None:
    inst = ServiceInstance(unique, "n1", "h:1")
    provider.registry.register(inst, ttl=2)
    key = f"/im-infra/services/{unique}/n1"
    first = provider.client.get(key)
    assert first is not None
    # Another client revokes the lease: etcd deletes the key, as when the lease expires.
    with coord.connect(etcd_endpoints) as other:
        other.client.lease_revoke(first.lease)
        assert other.client.get(key) is None

        def back() -> bool:
            kv = other.client.get(key)
            return kv is not None and kv.lease != first.lease

        wait_for(back, 5, "automatic re-registration")
        assert other.registry.discover(unique) == [inst]


def test_discover_serves_cache_without_etcd_round_trips(
    provider: coord.EtcdProvider, unique: str
) -> None:
    provider.registry.register(ServiceInstance(unique, "a", "h:1"), ttl=3)
    provider.registry.discover(unique)
    calls = 0
    real = provider.client.range

    def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        return real(*args, **kwargs)

    provider.client.range = counting  # type: ignore[method-assign]
    try:
        start = time.perf_counter()
        for _ in range(1000):
            provider.registry.discover(unique)
        elapsed = time.perf_counter() - start
    finally:
        provider.client.range = real  # type: ignore[method-assign]
    assert calls == 0
    assert elapsed < 5  # sanity bound only; speed is measured by the benchmark
