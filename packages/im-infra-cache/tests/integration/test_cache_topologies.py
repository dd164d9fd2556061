"""Sentinel and Cluster modes against real processes (a sentinel over an own redis-server; a
three-node Redis Cluster made of own redis-servers), blocking and asyncio."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from im_infra import cache
from im_infra_testsupport.backends import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]


FAST = {"connect_timeout": 2.0, "read_timeout": 2.0}


def wait_for(check: Any, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except redis.RedisError:
            pass
        time.sleep(0.1)
    pytest.fail(f"{what} not ready within {timeout} s")


@pytest.fixture
def sentinel_port(redis_server_factory: Any, tmp_path: Path) -> Iterator[int]:
    """A sentinel (redis-server --sentinel) monitoring an own master as "mymaster"."""
    master = redis_server_factory()
    port = free_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
        f"sentinel monitor mymaster 127.0.0.1 {master.port} 1\n"
        "sentinel down-after-milliseconds mymaster 5000\n"
    )
    binary = shutil.which("redis-server")
    assert binary is not None
    log = (tmp_path / "sentinel.log").open("wb")
    proc = subprocess.Popen([binary, str(conf), "--sentinel"], stdout=log, stderr=log)
    try:
        probe = redis.Redis(port=port, socket_timeout=1)
        wait_for(
            lambda: probe.execute_command(  # type: ignore[no-untyped-call]
                "SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster"
            ),
            "sentinel",
        )
        probe.close()
        yield port
    finally:
        proc.kill()
        proc.wait(10)
        log.close()


def test_sentinel_mode(make_cache: Any, sentinel_port: int) -> None:
    c = make_cache(mode="sentinel", addresses=[f"127.0.0.1:{sentinel_port}"], **FAST)
    assert c.set("k", "v") is True
    assert c.get("k") == "v"
    assert c.pipeline().incr("n").get("k").execute() == [1, "v"]
    lock = c.lock("l")
    assert lock.try_acquire() is True
    lock.release()


def test_sentinel_unknown_master_is_unavailable(make_cache: Any, sentinel_port: int) -> None:
    c = make_cache(
        mode="sentinel",
        addresses=[f"127.0.0.1:{sentinel_port}"],
        master_name="nosuch",
        retry={"max_retries": 0},
        **FAST,
    )
    with pytest.raises(cache.CacheUnavailable):
        c.get("k")


@pytest.fixture
def cluster_nodes(redis_server_factory: Any) -> list[str]:
    """Three own redis-servers joined into a Redis Cluster (no replicas)."""
    servers = [
        redis_server_factory(
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-port",  # explicit: the default (port + 10000) may not exist
            str(free_port()),
        )
        for _ in range(3)
    ]
    nodes = [f"127.0.0.1:{s.port}" for s in servers]
    subprocess.run(
        ["redis-cli", "--cluster", "create", *nodes, "--cluster-replicas", "0", "--cluster-yes"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    probes = [redis.Redis(port=s.port, socket_timeout=1) for s in servers]
    wait_for(
        lambda: all(p.cluster("info")["cluster_state"] == "ok" for p in probes), "cluster state"
    )
    for p in probes:
        p.close()
    return nodes


def test_cluster_mode(make_cache: Any, cluster_nodes: list[str]) -> None:
    c = make_cache(mode="cluster", addresses=cluster_nodes[:1], **FAST)
    for i in range(20):  # keys spread over the three nodes' slots
        assert c.set(f"k{i}", i) is True
    assert [c.get(f"k{i}") for i in range(20)] == [str(i) for i in range(20)]
    assert c.delete("k0") == 1
    assert c.hmset("h", {"a": 1}) == 1
    assert c.hgetall("h") == {"a": "1"}
    script = c.register_script("return redis.call('GET', KEYS[1])")
    assert script(["k5"]) == "5"
    lock = c.lock("job")
    assert lock.try_acquire() is True
    lock.release()
    assert c.bf_add("bf", "x") is True
    assert c.bf_exists("bf", "x") is True
    assert c.mget("{t}a", "{t}b") == [None, None]  # one slot thanks to the hash tag
    p = c.pipeline(transaction=False)
    p.set("p1", "a").set("p2", "b").get("p1").get("p2")
    assert p.execute() == [True, True, "a", "b"]


def test_cluster_scan_iter_walks_every_primary(
    make_cache: Any, cluster_nodes: list[str], flavor: str
) -> None:
    c = make_cache(mode="cluster", addresses=cluster_nodes[:1], **FAST)
    other = make_cache(mode="cluster", addresses=cluster_nodes[:1], **FAST)  # another prefix
    names = [f"k{i}" for i in range(40)]  # spread over the three primaries' slots
    for name in names:
        c.set(name, 1)
        other.set(name, 2)
    c.set("other", 3)
    host, port = cluster_nodes[0].split(":")
    probe = redis.RedisCluster(host=host, port=int(port))
    try:
        node_of = probe.get_node_from_key  # untyped in redis-py
        owners = {node_of(f"{c.key_prefix}{n}").name for n in names}  # type: ignore[no-untyped-call]
    finally:
        probe.close()
    assert len(owners) == 3, "the keys should land on all three primaries"

    def scan(match: str, count: int | None = None) -> list[str]:
        if flavor == "async":

            async def collect() -> list[str]:
                return [k async for k in c.target.scan_iter(match, count)]

            return list(c.wait(collect()))
        return list(c.target.scan_iter(match, count))

    assert sorted(scan("k*", count=5)) == sorted(names)  # every key once, only this prefix
    assert sorted(scan("*")) == sorted([*names, "other"])
    with pytest.raises(cache.CacheError, match="scan_iter"):
        c.scan(0, "k*")
