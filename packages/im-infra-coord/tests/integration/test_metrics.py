"""coord's metrics, read through the OpenTelemetry SDK's in-memory reader, for known workloads
against real etcd (the stack's, and an etcd the test stops and restarts for the fault counts).

Values are cumulative for the session: every assertion is on the difference before/after.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from pydantic import BaseModel

from im_infra import coord
from im_infra.coord import LockLost, LockTimeout, ServiceInstance

LOCK_WAIT = "im_infra.coord.lock.wait.duration"
RELOADS = "im_infra.coord.config.reloads"
LOSSES = "im_infra.coord.lease.losses"
RECONNECTS = "im_infra.coord.watch.reconnects"
PURPOSE = "im_infra.coord.lease.purpose"
KIND = "im_infra.coord.watch.kind"
COMPONENT = "im_infra.coord.component"


class Doc(BaseModel):
    n: int = 0


class Snapshot:
    """Counter values and histogram counts at one moment, to diff against a later one."""

    def __init__(self, probe: Any, queries: dict[str, tuple[str, dict[str, str], bool]]) -> None:
        self.probe = probe
        self.queries = queries
        self.before = self._read()

    def _read(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for label, (name, attrs, histogram) in self.queries.items():
            read = self.probe.count if histogram else self.probe.value
            out[label] = read(name, **attrs)
        return out

    def delta(self) -> dict[str, float]:
        now = self._read()
        return {label: now[label] - self.before[label] for label in self.queries}


def lock_wait_sum(probe: Any, outcome: str) -> float:
    return float(sum(p.sum for p in probe.points(LOCK_WAIT, outcome=outcome)))


def test_registrations_locks_and_config_reloads(
    metrics_probe: Any, etcd_endpoints: str, unique: str, wait_for: Any
) -> None:
    component = f"c{unique}"  # the reload counter is labelled with it: nobody else's counts
    snap = Snapshot(
        metrics_probe,
        {
            "registrations": ("im_infra.coord.registrations", {}, False),
            "deregistrations": ("im_infra.coord.deregistrations", {}, False),
            "acquired": (LOCK_WAIT, {"outcome": "acquired"}, True),
            "busy": (LOCK_WAIT, {"outcome": "busy"}, True),
            "timeout": (LOCK_WAIT, {"outcome": "timeout"}, True),
            "applied": (RELOADS, {COMPONENT: component, "outcome": "applied"}, False),
            "rejected": (RELOADS, {COMPONENT: component, "outcome": "rejected"}, False),
        },
    )
    timeout_sum = lock_wait_sum(metrics_probe, "timeout")
    p = coord.connect(etcd_endpoints, service=unique, env=unique, timeout=3)
    try:
        with coord.connect(etcd_endpoints, timeout=3) as other:
            # registry: 3 registered, 1 deregistered explicitly, 2 more by close() below
            for i in range(3):
                p.registry.register(ServiceInstance(unique, f"n{i}", f"h:{i}"), ttl=5)
            assert p.registry.deregister(unique, "n0")
            assert not p.registry.deregister(unique, "n0")  # not registered: not counted

            # locks: 3 acquisitions, one try_acquire finding it taken, one timeout
            for _ in range(3):
                p.lock.acquire(unique, ttl=5, timeout=5).release()
            held = p.lock.acquire(f"{unique}-h", ttl=5, timeout=5)
            assert other.lock.try_acquire(f"{unique}-h") is None
            with pytest.raises(LockTimeout):
                other.lock.acquire(f"{unique}-h", ttl=5, timeout=0.3)
            held.release()

            # live config: 2 applied changes, 1 rejected (invalid), 1 no-op (same value)
            live = p.config.component(component, Doc)
            assert live.wait_connected(5)
            key = f"{unique}/{component}.yaml"
            p.config.set(key, {"n": 1})
            wait_for(lambda: live.value.n == 1, 5, "first update applied")
            p.config.set(key, "n: not-a-number\n")
            wait_for(lambda: snap.delta()["rejected"] == 1, 5, "invalid update rejected")
            p.config.set(key, {"n": 1})  # back to the current value: nothing applied
            p.config.set(key, {"n": 2})
            wait_for(lambda: live.value.n == 2, 5, "second update applied")
    finally:
        p.close()
        with coord.connect(etcd_endpoints) as cleanup:
            cleanup.client.delete(f"/im-infra/config/{unique}/", prefix=True)

    assert snap.delta() == {
        "registrations": 3,
        "deregistrations": 3,  # n0, then n1 and n2 by close()
        "acquired": 4,
        "busy": 1,
        "timeout": 1,
        "applied": 2,
        "rejected": 1,
    }
    assert lock_wait_sum(metrics_probe, "timeout") - timeout_sum >= 0.3


def test_lease_losses_reregistration_and_watch_reconnects(
    metrics_probe: Any, etcd_cluster_factory: Any, unique: str, wait_for: Any
) -> None:
    """etcd stopped longer than the leases' TTL, then started: each lease is lost once, the
    registration comes back once, and each kind of watch reconnects."""
    cluster = etcd_cluster_factory(1)
    snap = Snapshot(
        metrics_probe,
        {
            "lost_registration": (LOSSES, {PURPOSE: "registration"}, False),
            "lost_instance": (LOSSES, {PURPOSE: "instance_id"}, False),
            "lost_lock": (LOSSES, {PURPOSE: "lock"}, False),
            "reregistrations": ("im_infra.coord.reregistrations", {}, False),
            "services": (RECONNECTS, {KIND: "services"}, False),
            "config": (RECONNECTS, {KIND: "config"}, False),
            "component": (RECONNECTS, {KIND: "component"}, False),
            "lock_lost": (LOCK_WAIT, {"outcome": "lost"}, True),
        },
    )
    key = f"/im-infra/services/{unique}/n1"
    with coord.connect(cluster.endpoints, service=unique, timeout=1) as p:
        p.registry.register(ServiceInstance(unique, "n1", "h:1"), ttl=2)
        assert p.registry.discover(unique)  # starts the services watch
        watch = p.config.watch("app/", lambda _ev: None, prefix=True)
        live = p.config.component("doc", Doc)
        assert watch.wait_connected(5)
        assert live.wait_connected(5)
        p.instance_for(unique, ttl=2).instance_id()
        lock = p.lock.acquire(unique, ttl=2, timeout=5)
        old_lease = p.client.get(key).lease  # type: ignore[union-attr]

        cluster.stop(0)
        time.sleep(2.5)  # past every lease's loss deadline (2/3 of 2 s) and its TTL
        assert lock.lost
        cluster.start(0)

        def registered_again() -> bool:
            kv = p.client.get(key)
            return kv is not None and kv.lease != old_lease

        wait_for(registered_again, 10, "registration re-created")
        wait_for(watch._loop.connected.is_set, 10, "config watch back")
        wait_for(lambda: live.wait_connected(0), 10, "component watch back")

        def services_back() -> bool:
            return snap.delta()["services"] >= 1

        wait_for(services_back, 10, "services watch back")
        with pytest.raises(LockLost):
            lock.release()

    delta = snap.delta()
    assert delta["lost_registration"] == 1
    assert delta["lost_instance"] == 1
    assert delta["lost_lock"] == 1
    assert delta["reregistrations"] == 1
    for kind in ("services", "config", "component"):
        # once per outage; a second only if etcd dropped a fresh stream while starting up
        assert 1 <= delta[kind] <= 2, (kind, delta)
    assert delta["lock_lost"] == 0  # the loss happened while held, not while waiting
