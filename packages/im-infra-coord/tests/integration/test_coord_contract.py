"""One set of behaviour tests, run against ``coord.testing.MemoryEtcd`` and a real etcd.

The memory half needs no server (``pytest
packages/im-infra-coord/tests/integration/test_coord_contract.py -k
memory``); the etcd half uses ``$IM_INFRA_ETCD_ENDPOINTS``. A difference between the two is a
bug in the fake.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from pydantic import BaseModel

from im_infra import coord
from im_infra.coord.testing import MemoryEtcd

Connect = Callable[..., coord.EtcdProvider]


@pytest.fixture(params=["memory", "etcd"])
def connect(request: pytest.FixtureRequest) -> Iterator[Connect]:
    """``connect(service=...)``: a provider on the backend under test, in a private
    environment; every provider made is closed (and the environment's keys removed) after."""
    env = f"c{uuid.uuid4().hex[:10]}"
    made: list[coord.EtcdProvider] = []
    if request.param == "memory":
        etcd = MemoryEtcd()

        def make(service: str | None = None, **kw: object) -> coord.EtcdProvider:
            p = etcd.connect(service=service, env=env, **kw)  # type: ignore[arg-type]
            made.append(p)
            return p

    else:
        endpoints = request.getfixturevalue("etcd_endpoints")

        def make(service: str | None = None, **kw: object) -> coord.EtcdProvider:
            p = coord.connect(endpoints, service=service, env=env, timeout=3, **kw)  # type: ignore[arg-type]
            made.append(p)
            return p

    yield make
    for p in made:
        if not p.closed:
            p.close()
    if request.param == "etcd":
        with coord.connect(request.getfixturevalue("etcd_endpoints"), env=env) as p:
            p.client.delete(p.config.root, prefix=True)


def wait_for(check: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.02)
    pytest.fail(f"{what}: not within {timeout}s")


def name() -> str:
    return f"n{uuid.uuid4().hex[:10]}"


# ------------------------------------------------------------------ config center
def test_config_documents(connect: Connect) -> None:
    cfg: coord.ConfigManager = connect().config
    assert cfg.get("svc/kafka.yaml") is None
    assert cfg.get_document("svc/kafka.yaml") is None
    r1 = cfg.set("svc/kafka.yaml", {"brokers": "a:1", "acks": "all"})
    entry = cfg.get("svc/kafka.yaml")
    assert entry is not None
    assert entry.key == "svc/kafka.yaml"
    assert entry.mod_revision == entry.create_revision == r1 and entry.version == 1
    assert cfg.get_document("svc/kafka.yaml") == {"brokers": "a:1", "acks": "all"}
    r2 = cfg.set("svc/kafka.yaml", "brokers: b:2\n")
    assert r2 > r1
    entry2 = cfg.get("svc/kafka.yaml")
    assert entry2 is not None and entry2.version == 2 and entry2.create_revision == r1
    cfg.set("svc/db.json", {"dsn": "x"})
    cfg.set("other/db.yaml", "a: 1")
    assert [e.key for e in cfg.list("svc/")] == ["svc/db.json", "svc/kafka.yaml"]
    assert cfg.get_document("svc/db.json") == {"dsn": "x"}
    with pytest.raises(coord.ConfigError, match=r"bad\.yaml"):
        cfg.set("svc/bad.yaml", "a: [unclosed")
    assert cfg.delete("svc/kafka.yaml") is True
    assert cfg.delete("svc/kafka.yaml") is False
    assert cfg.get("svc/kafka.yaml") is None


def test_config_compare_and_set(connect: Connect) -> None:
    cfg = connect().config
    assert cfg.compare_and_set("k.yaml", {"v": 1}, 0) is True
    assert cfg.compare_and_set("k.yaml", {"v": 2}, 0) is False
    entry = cfg.get("k.yaml")
    assert entry is not None
    assert cfg.compare_and_set("k.yaml", {"v": 3}, entry.mod_revision + 100) is False
    assert cfg.compare_and_set("k.yaml", {"v": 3}, entry.mod_revision) is True
    assert cfg.get_document("k.yaml") == {"v": 3}


def test_config_watch_delivers_later_changes(connect: Connect) -> None:
    cfg = connect().config
    before = cfg.set("w/a.yaml", {"v": 0})
    events: list[coord.ConfigEvent] = []
    with cfg.watch("w/", events.append, prefix=True) as w:
        assert w.wait_connected(5)
        r1 = cfg.set("w/a.yaml", {"v": 1})
        cfg.set("elsewhere.yaml", {"v": 1})
        r2 = cfg.set("w/b.yaml", {"v": 2})
        r3_ok = cfg.delete("w/a.yaml")
        wait_for(lambda: len(events) >= 3, what="3 events")
        time.sleep(0.1)
    assert r3_ok
    assert [(e.kind, e.key) for e in events] == [
        ("put", "w/a.yaml"),
        ("put", "w/b.yaml"),
        ("delete", "w/a.yaml"),
    ]
    assert events[0].revision == r1 and events[1].revision == r2 > before
    assert events[0].entry is not None and events[0].entry.document() == {"v": 1}
    assert events[2].entry is None
    # start_revision replays history from that revision on
    replay: list[coord.ConfigEvent] = []
    with cfg.watch("w/b.yaml", replay.append, start_revision=r1):
        wait_for(lambda: len(replay) >= 1, what="replayed event")
    assert [(e.kind, e.revision) for e in replay] == [("put", r2)]


class Widget(BaseModel):
    """A component no environment variable configures (IM_INFRA_WIDGET_* are unset)."""

    brokers: str = "default:1"
    acks: str = "1"


def test_component_config_layers_and_live_updates(connect: Connect) -> None:
    p = connect(service="im-logic")
    p.config.set("global/widget.yaml", {"brokers": "g:1", "acks": "all"})
    p.config.set("im-logic/widget.yaml", {"acks": "0"})
    once = coord.load_component_config("widget", Widget, service="im-logic", coord=p)
    assert once == Widget(brokers="g:1", acks="0")
    live = p.config.component("widget", Widget, overrides={"brokers": "o:3"})
    assert live.value == Widget(brokers="o:3", acks="0") and live.source == "etcd"
    changes: list[tuple[Widget, Widget]] = []
    live.on_change(lambda old, new: changes.append((old, new)))
    assert live.wait_connected(5)
    p.config.set("im-logic/widget.yaml", {"acks": "-1"})
    wait_for(lambda: live.value.acks == "-1", what="live update")
    p.config.set("im-logic/widget.yaml", {"acks": 5})  # a str field in the model: rejected
    time.sleep(0.3)
    assert live.value == Widget(brokers="o:3", acks="-1")
    assert changes == [(Widget(brokers="o:3", acks="0"), Widget(brokers="o:3", acks="-1"))]


# ------------------------------------------------------------------ registry
def test_registry_register_discover_watch(connect: Connect) -> None:
    svc = name()
    a, b = connect(), connect()
    seen: list[list[str]] = []
    reg_b: coord.ServiceRegistry = b.registry
    with pytest.raises(coord.NoInstanceAvailable):
        reg_b.pick(svc)
    handle = reg_b.watch(svc, lambda insts: seen.append([i.id for i in insts]))
    a.registry.register(coord.ServiceInstance(svc, "n1", "10.0.0.1:1", {"zone": "a"}), ttl=5)
    a.registry.register(coord.ServiceInstance(svc, "n2", "10.0.0.2:1"), ttl=5)
    wait_for(lambda: [i.id for i in reg_b.discover(svc)] == ["n1", "n2"], what="discover both")
    assert reg_b.discover(svc)[0].metadata == {"zone": "a"}
    assert {reg_b.pick(svc).id for _ in range(4)} == {"n1", "n2"}
    wait_for(lambda: bool(seen) and seen[-1] == ["n1", "n2"], what="watch sees both")
    assert a.registry.deregister(svc, "n1") is True
    assert a.registry.deregister(svc, "n1") is False
    wait_for(lambda: seen[-1] == ["n2"], what="watch sees the deregistration")
    a.close()  # a closing provider deregisters what it registered
    wait_for(lambda: seen[-1] == [], what="watch sees the close")
    assert reg_b.discover(svc) == []
    handle.cancel()


def test_registration_expires_with_its_lease(connect: Connect) -> None:
    """A process that stops keeping its lease alive (crash) disappears after the TTL."""
    svc = name()
    a, b = connect(), connect()
    a.registry.register(coord.ServiceInstance(svc, "n1", "h:1"), ttl=1)
    wait_for(lambda: len(b.registry.discover(svc)) == 1, what="registered")
    a.keeper.close()  # the keepalive thread stops, as when the process dies
    wait_for(lambda: b.registry.discover(svc) == [], timeout=6, what="expired")


# ------------------------------------------------------------------ locks
def test_lock_mutual_exclusion_and_timeout(connect: Connect) -> None:
    lock_name = name()
    a, b = connect(), connect()
    locker_a: coord.Locker = a.lock
    with locker_a.acquire(lock_name, ttl=5, timeout=2) as held:
        assert held.held
        assert b.lock.try_acquire(lock_name, ttl=5) is None
        t0 = time.monotonic()
        with pytest.raises(coord.LockTimeout, match=lock_name):
            b.lock.acquire(lock_name, ttl=5, timeout=0.3)
        assert 0.25 <= time.monotonic() - t0 < 2.0
    got = b.lock.try_acquire(lock_name, ttl=5)
    assert got is not None and got.held
    got.release()
    assert not got.held


def test_lock_waiter_gets_it_when_released(connect: Connect) -> None:
    lock_name = name()
    a, b = connect(), connect()
    order: list[str] = []
    held = a.lock.acquire(lock_name, ttl=5)

    def waiter() -> None:
        with b.lock.acquire(lock_name, ttl=5, timeout=5):
            order.append("b")

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.3)
    order.append("a-release")
    held.release()
    t.join(5)
    assert order == ["a-release", "b"]


def test_lock_counter_no_lost_updates(connect: Connect) -> None:
    lock_name = name()
    providers = [connect() for _ in range(3)]
    counter = {"n": 0}

    def work(p: coord.EtcdProvider) -> None:
        for _ in range(5):
            with p.lock.acquire(lock_name, ttl=5, timeout=10):
                n = counter["n"]
                time.sleep(0.002)
                counter["n"] = n + 1

    threads = [threading.Thread(target=work, args=(p,)) for p in providers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert counter["n"] == 15


def test_lock_asyncio(connect: Connect) -> None:
    lock_name = name()
    a, b = connect(), connect()

    async def main() -> None:
        async with await a.lock.acquire_async(lock_name, ttl=5, timeout=2):
            assert await b.lock.try_acquire_async(lock_name, ttl=5) is None
            with pytest.raises(coord.LockTimeout):
                await b.lock.acquire_async(lock_name, ttl=5, timeout=0.2)
        got = await b.lock.try_acquire_async(lock_name, ttl=5)
        assert got is not None
        await got.release_async()

    asyncio.run(main())


def test_lock_bad_arguments(connect: Connect) -> None:
    with pytest.raises(coord.ConfigError):
        connect().lock.acquire("", ttl=5)
    with pytest.raises(coord.ConfigError):
        connect().lock.acquire(name(), ttl=0)


# ------------------------------------------------------------------ instance IDs
def test_instance_ids_unique_exhausted_and_released(connect: Connect) -> None:
    svc = name()
    a, b, c = connect(), connect(), connect()
    ia: coord.Instancer = a.instance_for(svc, max_id=1)
    ib = b.instance_for(svc, max_id=1)
    assert ia.current_id is None
    ids = {ia.instance_id(), ib.instance_id()}
    assert ids == {0, 1}
    assert ia.instance_id() == ia.current_id  # cached
    with pytest.raises(coord.InstanceIdExhausted):
        c.instance_for(svc, max_id=1).instance_id()
    freed = ia.current_id
    a.close()  # released on close
    assert c.instance_for(svc, max_id=1).instance_id() == freed
    ib.release()
    assert ib.current_id is None


def test_instance_id_lost_is_reported(connect: Connect) -> None:
    svc = name()
    a, b = connect(), connect()
    inst = a.instance_for(svc, max_id=0, ttl=1)
    lost: list[int] = []
    inst.on_lost(lost.append)
    assert inst.instance_id() == 0
    # someone else deletes the lease's key and the lease: as after a long partition
    lease_id = inst._lease.id  # type: ignore[union-attr]
    b.client.lease_revoke(lease_id)
    wait_for(lambda: lost == [0], timeout=6, what="loss reported")
    assert inst.current_id is None
