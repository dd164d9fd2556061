"""Fault tests on etcd processes the tests own: restarts, member kills, bad endpoints and auth."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, Field
from pyetcd import etcdrpc

from im_infra import coord
from im_infra.coord import AuthenticationError, ConfigEvent, CoordUnavailable, ServiceInstance
from im_infra_testsupport.backends import free_port


class Kafka(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    acks: str = "all"
    batch_size: int = Field(16384, alias="batchSize")


class Recorder:
    """Collects the ``n`` values of config events, in order."""

    def __init__(self) -> None:
        self.values: list[int] = []
        self.lock = threading.Lock()

    def __call__(self, ev: ConfigEvent) -> None:
        if ev.entry is not None:
            with self.lock:
                self.values.append(int(ev.entry.document()["n"]))


def test_etcd_down_longer_than_ttl_then_back(
    etcd_cluster_factory: Any, wait_for: Any, unique: str
) -> None:
    cluster = etcd_cluster_factory(1)
    ep = cluster.endpoints
    inst = ServiceInstance(unique, "n1", "10.0.0.1:1")
    key = f"/im-infra/services/{unique}/n1"
    with (
        coord.connect(ep, service=unique, timeout=1) as p,
        coord.connect(ep, timeout=1) as observer,
        coord.connect(ep, timeout=1) as writer,
    ):
        p.registry.register(inst, ttl=2)
        seen_lists: list[list[str]] = []
        observer.registry.watch(unique, lambda xs: seen_lists.append([i.id for i in xs]))
        wait_for(lambda: observer.registry.discover(unique) == [inst], 5, "registration seen")
        rec = Recorder()
        w = p.config.watch("app/", rec, prefix=True)
        assert w.wait_connected(5)
        writer.config.set("global/kafka.yaml", "acks: '1'\n")
        live = p.config.component("kafka", Kafka)
        assert live.wait_connected(5)
        for n in (1, 2, 3):
            writer.config.set("app/x.yaml", {"n": n})
        wait_for(lambda: rec.values == [1, 2, 3], 5, "updates before the outage")
        entry = writer.client.get(key)
        assert entry is not None
        old_lease = entry.lease

        cluster.stop(0)
        time.sleep(3.5)  # longer than the registration TTL (2 s)
        with pytest.raises(CoordUnavailable):
            p.config.get("app/x.yaml")
        cluster.start(0)

        for n in (4, 5, 6):  # written at once: possibly before the watch is back
            writer.config.set("app/x.yaml", {"n": n})
        writer.config.set("global/kafka.yaml", "acks: '0'\n")

        def registered_again() -> bool:
            kv = writer.client.get(key)
            return kv is not None and kv.lease != old_lease

        took = wait_for(registered_again, 8, "registration back by itself")
        print(f"registration back {took:.2f}s after etcd restarted")
        took = wait_for(lambda: rec.values == [1, 2, 3, 4, 5, 6], 8, "every update, in order")
        print(f"watch caught up {took:.2f}s after the writes")
        wait_for(lambda: live.value.acks == "0", 8, "live config current again")
        # The old lease expires after etcd's restart; the registration must survive it.
        time.sleep(2.5)
        assert writer.client.get(key) is not None
        assert observer.registry.discover(unique) == [inst]
        assert seen_lists[-1] == ["n1"]


def test_member_kill_in_3_member_cluster(
    etcd_cluster_factory: Any, wait_for: Any, unique: str
) -> None:
    cluster = etcd_cluster_factory(3)
    with coord.connect(cluster.endpoints, service=unique, timeout=1) as p:
        p.config.set("app/x.yaml", {"n": 0})
        used = cluster.endpoints.index(p.client.current_endpoint)
        others = [e for i, e in enumerate(cluster.endpoints) if i != used]
        rec = Recorder()
        w = p.config.watch("app/", rec, prefix=True)
        assert w.wait_connected(5)
        p.registry.register(ServiceInstance(unique, "n1", "h:1"), ttl=2)
        my_id = p.instance_for(unique, ttl=2).instance_id()

        cluster.kill(used)
        with coord.connect(others, timeout=2) as writer:
            for n in (1, 2, 3, 4, 5):
                writer.config.set("app/x.yaml", {"n": n})
        # every operation keeps working through the surviving members
        assert p.config.get_document("app/x.yaml") == {"n": 5}
        assert p.client.current_endpoint != cluster.endpoints[used]
        with p.lock.acquire(unique, ttl=2, timeout=5) as lock:
            assert lock.held
        assert p.instance_for(f"{unique}-2", ttl=2).instance_id() >= 0
        wait_for(lambda: rec.values == [1, 2, 3, 4, 5], 8, "watch resumed without a gap")
        time.sleep(2.5)  # past the TTLs: the keepalives failed over too
        assert p.instance_for(unique, ttl=2).current_id == my_id
        assert [i.id for i in p.registry.discover(unique)] == ["n1"]


def test_bad_endpoints_fail_fast_with_typed_errors(tmp_path: Path) -> None:
    dead = f"127.0.0.1:{free_port()}"
    with coord.connect([dead], service="svc", timeout=1) as p:
        for call in (
            lambda: p.config.get("k"),
            lambda: p.registry.discover("svc"),
            lambda: p.lock.acquire("l", ttl=2, timeout=1),
            lambda: p.instance.instance_id(),
        ):
            start = time.monotonic()
            with pytest.raises(CoordUnavailable, match=dead):
                call()
            assert time.monotonic() - start < 3
        # config resolution degrades instead of failing
        cfg = coord.load_component_config("kafka", Kafka, service="svc", provider=p)
        assert cfg == Kafka.model_validate({})
    # a server that accepts connections but never answers: bounded by the timeout, no hang
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        mute = f"127.0.0.1:{silent.getsockname()[1]}"
        with coord.connect([mute], timeout=1) as p:
            start = time.monotonic()
            with pytest.raises(CoordUnavailable, match=mute):
                p.config.get("k")
            assert time.monotonic() - start < 3


def _enable_auth(endpoint: str, password: str) -> None:
    import grpc

    with grpc.insecure_channel(endpoint) as channel:
        auth = etcdrpc.AuthStub(channel)
        auth.UserAdd(etcdrpc.AuthUserAddRequest(name="root", password=password), timeout=5)
        auth.RoleAdd(etcdrpc.AuthRoleAddRequest(name="root"), timeout=5)
        auth.UserGrantRole(etcdrpc.AuthUserGrantRoleRequest(user="root", role="root"), timeout=5)
        auth.AuthEnable(etcdrpc.AuthEnableRequest(), timeout=5)


def test_credentials(etcd_cluster_factory: Any) -> None:
    cluster = etcd_cluster_factory(1)
    ep = cluster.endpoints
    with pytest.raises(AuthenticationError, match="has no auth"):
        coord.connect(ep, username="root", password="s3cret-pw", timeout=2)
    _enable_auth(ep[0], "s3cret-pw")
    with pytest.raises(AuthenticationError) as info:
        coord.connect(ep, username="root", password="wrong-pw", timeout=2)
    assert "wrong-pw" not in str(info.value)
    assert "authentication failed" in str(info.value)
    with (
        coord.connect(ep, timeout=2) as anonymous,
        pytest.raises(AuthenticationError, match="user name is empty"),
    ):
        anonymous.config.get("k")
    with coord.connect(ep, username="root", password="s3cret-pw", timeout=2) as p:
        p.config.set("k.yaml", "a: 1\n")
        assert p.config.get_document("k.yaml") == {"a": 1}
        with p.lock.acquire("l", ttl=2, timeout=2):
            pass
        p.client._token = "invalid-token"  # an expired token is replaced transparently
        assert p.config.get_document("k.yaml") == {"a": 1}


def test_degraded_start_then_etcd_takes_over(
    etcd_cluster_factory: Any, wait_for: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster = etcd_cluster_factory(1)
    with coord.connect(cluster.endpoints, timeout=1) as admin:
        admin.config.set("global/kafka.yaml", "acks: '1'\nbatchSize: 5\n")
    cluster.stop(0)
    (tmp_path / "kafka.yaml").write_text("acks: local\n")
    monkeypatch.setenv("IM_INFRA_CONFIG_DIR", str(tmp_path))
    with coord.connect(cluster.endpoints, service="svc", timeout=1) as p:
        once = coord.load_component_config("kafka", Kafka, service="svc", provider=p)
        assert once.acks == "local"
        live = p.config.component("kafka", Kafka)
        assert (live.source, live.value.acks) == ("local", "local")
        changes: list[tuple[str, str]] = []
        live.on_change(lambda old, new: changes.append((old.acks, new.acks)))
        cluster.start(0)
        wait_for(lambda: live.source == "etcd", 8, "etcd takes over")
        assert (live.value.acks, live.value.batch_size) == ("1", 5)
        assert changes == [("local", "1")]


def test_watch_resumes_after_compaction(etcd_cluster_factory: Any, wait_for: Any) -> None:
    cluster = etcd_cluster_factory(1)
    with coord.connect(cluster.endpoints, timeout=2) as p:
        first = p.config.set("c.yaml", {"n": 1})
        last = 0
        for n in (2, 3):
            last = p.config.set("c.yaml", {"n": n})
        p.client.compact(last)
        rec = Recorder()
        p.config.watch("c.yaml", rec, start_revision=first)  # history before `last` is gone
        p.config.set("c.yaml", {"n": 4})
        wait_for(lambda: rec.values == [3, 4], 5, "watch goes on from the oldest kept revision")
