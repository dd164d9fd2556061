"""Graceful shutdown: Provider.close() removes this process from etcd at once, not after a TTL.

Every lease here has a 30 s TTL, so a key that disappears within a couple of seconds was
deleted by close() (deregistration, lock release, lease revocation), not by expiry.
"""

from __future__ import annotations

import json
import signal
import time
from typing import Any

import pytest
from pydantic import BaseModel

from im_infra import coord
from im_infra.coord import ServiceInstance

TTL = 30
PROMPT = 3.0  # "at once": far below the TTL, with room for a busy CI machine


def keys_of(client: Any, unique: str) -> dict[str, list[str]]:
    out = {}
    for kind in ("services", "instance", "lock"):
        prefix = f"/im-infra/{kind}/{unique}/"
        out[kind] = [kv.key for kv in client.range(prefix, prefix=True, keys_only=True).kvs]
    return out


def test_close_deregisters_releases_and_revokes_at_once(etcd_endpoints: str, unique: str) -> None:
    p = coord.connect(etcd_endpoints, service=unique, timeout=3)
    with coord.connect(etcd_endpoints, timeout=3) as observer:
        p.registry.register(ServiceInstance(unique, "n1", "h:1"), ttl=TTL)
        instance_id = p.instance_for(unique, ttl=TTL).instance_id()
        lock = p.lock.acquire(unique, ttl=TTL, timeout=5)
        extra = p.keeper.grant(TTL)  # a lease no component owns: close() revokes it too
        observer.client.put(f"/im-infra/lock/{unique}/extra", b"", lease=extra.id)
        leases = {
            observer.client.get(f"/im-infra/services/{unique}/n1").lease,  # type: ignore[union-attr]
            observer.client.get(f"/im-infra/instance/{unique}/{instance_id}").lease,  # type: ignore[union-attr]
            lock._lease.id,
            extra.id,
        }
        assert all(v for v in keys_of(observer.client, unique).values())

        started = time.monotonic()
        p.close()
        took = time.monotonic() - started
        # checked right after close() returned: nothing is left to expire
        assert keys_of(observer.client, unique) == {"services": [], "instance": [], "lock": []}
        for lease_id in leases:
            assert observer.client.lease_keepalive_once(lease_id) <= 0, "lease not revoked"
        assert took < PROMPT, f"close() took {took:.2f}s"
        assert not lock.held

        # idempotent, and the provider refuses new work
        p.close()
        with p:
            pass
        assert p.closed
        with pytest.raises(coord.ConfigError, match="closed"):
            _ = p.registry


def test_sigterm_to_a_process_that_closes_its_provider(
    etcd_endpoints: str, unique: str, workers: Any
) -> None:
    proc = workers.start("serve", etcd_endpoints, unique, str(TTL))
    ready = json.loads(workers.read_line(proc, 30))
    with coord.connect(etcd_endpoints, timeout=3) as observer:
        before = keys_of(observer.client, unique)
        assert before["services"] == [f"/im-infra/services/{unique}/n1"]
        assert before["instance"] == [f"/im-infra/instance/{unique}/{ready['instance_id']}"]
        assert len(before["lock"]) == 1

        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert workers.read_line(proc, 15) == "closed"
        assert proc.wait(timeout=15) == 0
        took = time.monotonic() - sent
        assert keys_of(observer.client, unique) == {"services": [], "instance": [], "lock": []}
        assert took < PROMPT, f"SIGTERM to keys gone took {took:.2f}s (TTL {TTL}s)"
        # another instance can take the lock at once
        again = observer.lock.try_acquire(unique, ttl=5)
        assert again is not None
        again.release()


class Doc(BaseModel):
    n: int = 0


def test_every_closable_is_idempotent_and_a_context_manager(
    provider: coord.EtcdProvider, unique: str
) -> None:
    p = provider
    observer = p.client
    with p.registry.watch(unique, lambda _xs: None) as handle:
        assert handle is not None
    handle.close()
    with p.config.watch("x/", lambda _ev: None, prefix=True) as watch:
        assert watch.wait_connected(5)
    watch.close()
    with p.config.component("doc", Doc) as live:
        assert live.value == Doc()
    live.close()
    with p.lock.acquire(unique, ttl=TTL, timeout=5) as lock:
        assert lock.held
    lock.release()
    with p.instance_for(unique, ttl=TTL) as inst:
        instance_id = inst.instance_id()
        assert observer.get(f"/im-infra/instance/{unique}/{instance_id}") is not None
    assert observer.get(f"/im-infra/instance/{unique}/{instance_id}") is None
    inst.close()
    p.registry.register(ServiceInstance(unique, "n1", "h:1"), ttl=TTL)
    for part in (p.registry, p.lock, p.config):
        with part:
            pass
        part.close()  # a second close is a no-op
    assert observer.get(f"/im-infra/services/{unique}/n1") is None
