"""Client-side caching against the real Redis 7.0 (CLIENT TRACKING, RESP2 redirect), blocking and
asyncio: a change by another client invalidates within 50 ms; a Redis killed and restarted, or a
connection cut by a TCP proxy, empties the local cache and no stale value is read afterwards."""

from __future__ import annotations

import statistics
import threading
import time
from typing import Any

import pytest
import redis

from im_infra import cache
from im_infra_testsupport.tcpproxy import TcpProxy

from .conftest import address_of, pause

pytestmark = pytest.mark.integration

FAST = {
    "connect_timeout": 0.5,
    "read_timeout": 0.5,
    "retry": {"max_retries": 1, "min_backoff": 0.01, "max_backoff": 0.02},
}


def local(c: Any) -> cache.local.LocalCache:
    store: cache.local.LocalCache | None = c.local_cache
    assert store is not None
    return store


def wait_for(check: Any, c: Any, timeout: float = 5.0, what: str = "condition") -> None:
    """Poll ``check()``; on the asyncio flavour the cache's loop runs meanwhile (its tracking
    task reads the invalidations)."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} not reached within {timeout} s"
        pause(c, 0.005)


def tracked(make_cache: Any, **kw: Any) -> Any:
    """A cache with client-side caching of ``user:`` keys, tracking already established."""
    c = make_cache(local_cache={"prefixes": ["user:"], "pingInterval": 0.2}, **kw)
    c.get("user:warm-up")  # the first covered GET starts the tracking connection
    wait_for(lambda: local(c).enabled, c, what="tracking")
    return c


def test_hits_are_served_locally_and_counted(make_cache: Any, raw: redis.Redis) -> None:
    c = tracked(make_cache)
    c.set("user:1", "ann")
    c.set("other", "x")
    pause(c, 0.05)  # the server's invalidations of our own writes have arrived
    store = local(c)
    hits, misses = store.hits, store.misses
    assert c.get("user:1") == "ann"
    assert store.misses == misses + 1
    for _ in range(10):
        assert c.get("user:1") == "ann"
        assert c.get_bytes("user:1") == b"ann"
    assert store.hits == hits + 20
    assert c.get("other") == "x"  # not covered: never stored
    assert c.key_prefix + "other" not in store._data
    assert c.get("user:none") is None  # a missing key is cached too (as nil)...
    raw.set(c.key_prefix + "user:none", "now")
    wait_for(lambda: c.get("user:none") == "now", c, 1.0, "invalidation of a cached nil")


def test_a_change_by_another_client_invalidates_within_50ms(
    make_cache: Any, raw: redis.Redis
) -> None:
    c = tracked(make_cache)
    full = c.key_prefix + "user:1"
    delays = []
    for i in range(30):
        raw.set(full, f"v{i}")
        wait_for(lambda i=i: c.get("user:1") == f"v{i}", c, 1.0, "fill")
        assert c.get("user:1") == f"v{i}"  # now served locally
        changed = time.perf_counter()
        raw.set(full, f"w{i}")  # another client
        while c.get("user:1") != f"w{i}":
            assert time.perf_counter() - changed < 1.0, "never invalidated"
            pause(c, 0.0005)
        delays.append(time.perf_counter() - changed)
    # the requirement is 50 ms; quiet, the median is under 5 ms, and it stayed under 12 ms at a
    # load average of 12 on 2 cores: half the requirement keeps a margin without timing the host
    assert statistics.median(delays) < 0.025, delays
    assert sorted(delays)[-2] < 0.05, delays  # all but one outlier within 50 ms
    assert local(c).invalidations >= 30


def test_writes_through_this_cache_are_read_back_at_once(make_cache: Any) -> None:
    c = tracked(make_cache)
    for i in range(50):
        c.set("user:2", f"v{i}")
        assert c.get("user:2") == f"v{i}"
        assert c.get("user:2") == f"v{i}"
    c.delete("user:2")
    assert c.get("user:2") is None
    c.set("user:3", {"a": 1})
    assert c.get_obj("user:3") == {"a": 1}
    c.set("user:3", {"a": 2})
    assert c.get_obj("user:3") == {"a": 2}


def test_flushdb_drops_every_entry(make_cache: Any, redis_server_factory: Any) -> None:
    server = redis_server_factory()
    c = tracked(make_cache, address=f"127.0.0.1:{server.port}", db=0)
    c.set("user:1", "a")
    assert c.get("user:1") == "a"
    assert c.get("user:1") == "a"
    assert len(local(c)) >= 1
    redis.Redis(port=server.port).flushdb()
    wait_for(lambda: len(local(c)) == 0, c, 1.0, "flush")
    assert c.get("user:1") is None


def test_size_is_bounded_lru(make_cache: Any) -> None:
    c = make_cache(local_cache={"prefixes": ["user:"], "maxEntries": 10})
    c.get("user:warm-up")
    wait_for(lambda: local(c).enabled, c, what="tracking")
    c.mset({f"user:{i}": i for i in range(50)})
    pause(c, 0.1)  # the invalidations of those writes have arrived
    store = local(c)
    evicted = store.evictions
    for i in range(50):
        c.get(f"user:{i}")
    assert len(store) == 10
    assert store.evictions - evicted >= 40
    hits = store.hits
    assert c.get("user:49") == "49"  # the most recent ones stay
    assert store.hits == hits + 1
    assert c.get("user:0") == "0"  # evicted: asked Redis again
    assert store.hits == hits + 1


def test_redis_killed_and_restarted_empties_the_local_cache(
    make_cache: Any, redis_server_factory: Any
) -> None:
    server = redis_server_factory()
    c = tracked(make_cache, address=f"127.0.0.1:{server.port}", db=0, **FAST)
    c.set("user:1", "before-restart")
    assert c.get("user:1") == "before-restart"
    assert c.get("user:1") == "before-restart"
    assert len(local(c)) > 0
    server.kill()
    wait_for(lambda: not local(c).enabled, c, 2.0, "tracking lost")
    assert len(local(c)) == 0
    with pytest.raises(cache.CacheUnavailable):
        c.get("user:1")  # no stale answer from memory while Redis is down
    server.start()  # empty: it keeps nothing on disk
    wait_for(lambda: local(c).enabled, c, 10.0, "tracking re-established")
    assert c.get("user:1") is None  # not the pre-restart value
    redis.Redis(port=server.port).set(c.key_prefix + "user:1", "after")
    wait_for(lambda: c.get("user:1") == "after", c, 1.0, "new value")
    hits = local(c).hits
    assert c.get("user:1") == "after"
    assert local(c).hits == hits + 1  # caching again


def test_changes_made_while_the_connection_was_cut_are_never_read_stale(
    make_cache: Any, redis_url: str, raw: redis.Redis
) -> None:
    """The invalidation of a change made during a network cut is lost for good: the local cache
    must have been dropped when the cut was noticed."""
    addr = address_of(redis_url)
    proxy = TcpProxy(addr["address"])
    try:
        c = tracked(make_cache, address=proxy.endpoint, db=addr["db"], **FAST)
        full = c.key_prefix + "user:1"
        c.set("user:1", "old")
        assert c.get("user:1") == "old"
        assert c.get("user:1") == "old"
        proxy.cut()
        raw.set(full, "new")  # another client, while this one is cut off
        wait_for(lambda: not local(c).enabled, c, 3.0, "tracking lost")
        proxy.restore()
        wait_for(lambda: local(c).enabled, c, 10.0, "tracking back")
        assert c.get("user:1") == "new"
    finally:
        proxy.cut()


def test_readers_converge_while_another_client_writes(redis_url: str, raw: redis.Redis) -> None:
    """Eight reader threads on one cache, a writer on another connection: every read that
    starts 50 ms after the writer's last write returns that last value."""
    c = cache.new(
        f"it-cache-local-{time.time_ns()}",
        **address_of(redis_url),
        local_cache={"prefixes": ["user:"]},
    )
    full = c.key_prefix + "user:1"
    stop = threading.Event()
    settled = [float("inf")]  # reads starting after this time must see the last write
    late: dict[int, set[str | None]] = {n: set() for n in range(8)}
    try:
        c.get("user:warm-up")
        deadline = time.monotonic() + 5
        while not local(c).enabled:
            assert time.monotonic() < deadline
            time.sleep(0.01)

        def reader(n: int) -> None:
            while not stop.is_set():
                started = time.perf_counter()
                value = c.get("user:1")
                if started > settled[0]:
                    late[n].add(value)

        threads = [threading.Thread(target=reader, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for i in range(300):
            raw.set(full, str(i))
        settled[0] = time.perf_counter() + 0.05
        # long enough for every reader to run again on this loaded machine
        deadline = time.monotonic() + 10
        while not all(late.values()) and time.monotonic() < deadline:
            time.sleep(0.05)
        stop.set()
        for t in threads:
            t.join()
        assert all(values == {"299"} for values in late.values()), late
        assert local(c).hits > 0  # they were served locally
    finally:
        raw.delete(full)
        c.close()


def test_cluster_mode_is_refused() -> None:
    with pytest.raises(cache.CacheConfigError, match="localCache"):
        cache.new("svc", mode="cluster", local_cache={"prefixes": ["u:"]})


def test_tracking_authenticates_and_a_user_without_client_rights_just_gets_no_local_cache(
    make_cache: Any, redis_server_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    password = "tr4cking-pw-5e1"
    server = redis_server_factory("--requirepass", password)
    admin = redis.Redis(port=server.port, password=password)
    admin.acl_setuser(
        "noclient",
        enabled=True,
        passwords=[f"+{password}"],
        keys=["*"],
        commands=["+@all", "-client"],
    )
    c = tracked(make_cache, address=f"127.0.0.1:{server.port}", db=0, password=password)
    c.set("user:1", "a")
    pause(c, 0.05)  # the server's invalidation of our own write has arrived
    assert c.get("user:1") == "a"
    hits = local(c).hits
    assert c.get("user:1") == "a"
    assert local(c).hits == hits + 1

    limited = make_cache(
        service=c.service,
        address=f"127.0.0.1:{server.port}",
        db=0,
        username="noclient",
        password=password,
        local_cache={"prefixes": ["user:"]},
    )
    for _ in range(20):
        assert limited.get("user:1") == "a"  # always correct, straight from Redis
        pause(limited, 0.02)
    assert not local(limited).enabled and local(limited).hits == 0
    admin.set(limited.key_prefix + "user:1", "b")
    assert limited.get("user:1") == "b"
    logged = caplog.text  # (clog routes library records to stdlib logging until clog.init())
    assert "client-side cache tracking unavailable" in logged and "NoPermissionError" in logged
    assert password not in logged
