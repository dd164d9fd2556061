"""Instance IDs against the stack's etcd."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from im_infra import coord
from im_infra.coord import InstanceIdExhausted


def test_allocate_cache_release(provider: coord.EtcdProvider, etcd_endpoints: str) -> None:
    inst = provider.instance
    first = inst.instance_id()
    assert 0 <= first <= 1023
    assert inst.instance_id() == first
    assert provider.instance is inst
    key = f"/im-infra/instance/{provider.service}/{first}"
    assert provider.client.get(key) is not None
    inst.release()
    inst.release()
    assert provider.client.get(key) is None


def test_ids_unique_and_exhaustion(etcd_endpoints: str, unique: str) -> None:
    providers = [coord.connect(etcd_endpoints) for _ in range(5)]
    try:
        ids = [p.instance_for(unique, max_id=3).instance_id() for p in providers[:4]]
        assert sorted(ids) == [0, 1, 2, 3]
        with pytest.raises(InstanceIdExhausted, match=r"all 4 instance ids"):
            providers[4].instance_for(unique, max_id=3).instance_id()
        providers[0].close()  # frees one id
        assert providers[4].instance_for(unique, max_id=3).instance_id() == ids[0]
    finally:
        for p in providers:
            p.close()


def test_on_lost_callback(provider: coord.EtcdProvider, etcd_endpoints: str) -> None:
    inst = provider.instance_for(provider.service or "x", ttl=2)
    got: list[int] = []
    lost = threading.Event()

    def on_lost(i: int) -> None:
        got.append(i)
        lost.set()

    inst.on_lost(on_lost)
    my_id = inst.instance_id()
    kv = provider.client.get(f"/im-infra/instance/{provider.service}/{my_id}")
    assert kv is not None
    with coord.connect(etcd_endpoints) as other:
        other.client.lease_revoke(kv.lease)
    assert lost.wait(5)
    assert got == [my_id]
    assert inst.current_id is None
    assert 0 <= inst.instance_id() <= 1023  # a fresh allocation


def test_worker_logs_never_come_before_its_result(workers: Any) -> None:
    """The workers' stdout is their result channel: a log line there (e.g. a "lease lost"
    warning on a loaded machine) was once read as the JSON result (KeyError: 'errors')."""
    proc = workers.start("warn")
    assert workers.read_line(proc, 30) == "done"
    proc.wait(timeout=30)
    assert proc.stderr is not None
    assert "a warning before the result" in proc.stderr.read()


def test_200_concurrent_allocations_across_4_processes(
    etcd_endpoints: str, unique: str, workers: Any, wait_for: Any
) -> None:
    procs = [workers.start("alloc", etcd_endpoints, unique, "50", "2") for _ in range(4)]
    results = [json.loads(workers.read_line(p, 120)) for p in procs]
    assert [r["errors"] for r in results] == [[], [], [], []]
    all_ids = [i for r in results for i in r["ids"]]
    assert len(all_ids) == 200
    assert len(set(all_ids)) == 200
    assert all(0 <= i <= 1023 for i in all_ids)

    with coord.connect(etcd_endpoints) as p:
        prefix = f"/im-infra/instance/{unique}/"

        def held() -> set[int]:
            return {int(kv.key.rsplit("/", 1)[1]) for kv in p.client.range(prefix, prefix=True).kvs}

        assert held() == set(all_ids)
        procs[0].kill()
        took = wait_for(lambda: held() == set(all_ids) - set(results[0]["ids"]), 5, "ids freed")
        assert took <= 3.0  # TTL 2 s + 1 s


def test_restarted_process_gets_a_different_id(
    etcd_endpoints: str, unique: str, workers: Any
) -> None:
    first = workers.start("alloc", etcd_endpoints, unique, "1", "3")
    old = json.loads(workers.read_line(first, 30))["ids"]
    first.kill()  # crash: the old lease lives on for its TTL
    second = workers.start("alloc", etcd_endpoints, unique, "1", "3")
    new = json.loads(workers.read_line(second, 30))["ids"]
    assert len(old) == len(new) == 1
    assert new != old
