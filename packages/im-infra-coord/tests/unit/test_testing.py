"""coord.testing's fault switches (the shared behaviour is in
packages/im-infra-coord/tests/integration/
test_coord_contract.py, run against the fake and a real etcd)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from im_infra import coord
from im_infra.coord.testing import MemoryEtcd, memory_provider


def wait_for(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_unavailable_raises_and_watch_resumes_without_missing_changes() -> None:
    etcd = MemoryEtcd()
    with etcd.connect(service="s") as p, etcd.connect(service="s") as writer:
        events: list[coord.ConfigEvent] = []
        w = p.config.watch("a.yaml", events.append)
        assert w.wait_connected(2)
        etcd.set_available(False)
        assert not etcd.available
        with pytest.raises(coord.CoordUnavailable):
            p.config.get("a.yaml")
        etcd.set_available(True)
        writer.config.set("a.yaml", {"v": 1})
        wait_for(lambda: len(events) == 1)
        assert events[0].entry is not None and events[0].entry.document() == {"v": 1}


def test_component_config_falls_back_while_unavailable_then_takes_over() -> None:
    from pydantic import BaseModel

    class M(BaseModel):
        x: int = 1

    etcd = MemoryEtcd()
    with etcd.connect(service="s") as p:
        p.config.set("global/m.yaml", {"x": 2})
        etcd.set_available(False)
        live = p.config.component("m", M)
        sources = [live.source]
        assert live.value.x == 1
        etcd.set_available(True)
        wait_for(lambda: live.value.x == 2)
        sources.append(live.source)
        assert sources == ["defaults", "etcd"]


def test_expire_leases_loses_locks_and_ids() -> None:
    etcd = MemoryEtcd()
    with etcd.connect(service="s") as p:
        lock = p.lock.acquire("job", ttl=5)
        lost_ids: list[int] = []
        p.instance.on_lost(lost_ids.append)
        iid = p.instance.instance_id()
        assert etcd.expire_leases() >= 2
        wait_for(lambda: lock.lost and lost_ids == [iid], timeout=5)
        with pytest.raises(coord.LockLost):
            lock.check()
        with pytest.raises(coord.LockLost):
            lock.release()


def test_providers_of_one_store_share_it_and_separate_stores_do_not() -> None:
    etcd = MemoryEtcd()
    with etcd.connect() as a, etcd.connect() as b, memory_provider() as other:
        a.config.set("k.yaml", {"v": 1})
        assert b.config.get_document("k.yaml") == {"v": 1}
        assert other.config.get("k.yaml") is None


def test_bad_arguments_are_config_errors() -> None:
    with pytest.raises(coord.ConfigError, match="service"):
        MemoryEtcd().connect(service="")
    with pytest.raises(coord.ConfigError, match="timeout"):
        MemoryEtcd().connect(timeout=0)
    p = memory_provider()
    p.close()
    with pytest.raises(coord.ConfigError, match="closed"):
        _ = p.config
