"""Cache-aside against the real Redis: stampedes (threads, tasks, processes sharing a Redis lock),
not-found caching, TTL jitter, stale-while-refresh, a Redis that is down, and invalidation whose
DELs fail (connection cut by a TCP proxy) and are retried in the background."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

from im_infra import cache
from im_infra_testsupport.tcpproxy import TcpProxy

from .conftest import address_of, pause, unique_service

pytestmark = pytest.mark.integration

FAST = {
    "connect_timeout": 0.5,
    "read_timeout": 0.5,
    "retry": {"max_retries": 0, "min_backoff": 0.01, "max_backoff": 0.02},
}


class Counting:
    """A loader that counts its calls and takes ``delay`` seconds (sync)."""

    def __init__(self, value: Any, delay: float = 0.0) -> None:
        self.value = value
        self.delay = delay
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self) -> Any:
        with self._lock:
            self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        return self.value


class AsyncCounting(Counting):
    """The same, as a coroutine function (the asyncio cache's loop is not blocked)."""

    async def __call__(self) -> Any:
        self.calls += 1
        await asyncio.sleep(self.delay)
        return self.value


def test_stampede_of_1000_threads_runs_the_loader_once(redis_url: str, raw: redis.Redis) -> None:
    c = cache.new(unique_service("aside"), **address_of(redis_url), pool_size=20)
    try:
        aside = c.aside(ttl=30)
        loader = Counting({"id": 7, "name": "ann"}, delay=0.3)
        start = threading.Barrier(1000)
        results: list[Any] = []

        def worker() -> None:
            start.wait()
            results.append(aside.get("user:7", loader))

        threads = [threading.Thread(target=worker) for _ in range(1000)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert loader.calls == 1
        assert results == [{"id": 7, "name": "ann"}] * 1000
        assert aside.get("user:7", Counting("other")) == {"id": 7, "name": "ann"}  # cached
    finally:
        raw.delete(c.key_prefix + "user:7")
        c.close()


def test_stampede_of_1000_tasks_runs_the_loader_once(redis_url: str, raw: redis.Redis) -> None:
    calls = 0

    async def loader() -> list[int]:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.2)
        return [1, 2, 3]

    async def main() -> list[Any]:
        c = cache.new_async(unique_service("aside"), **address_of(redis_url))
        try:
            aside = c.aside(ttl=30)
            out = await asyncio.gather(*(aside.get("group:1", loader) for _ in range(1000)))
            assert await aside.get("group:1", lambda: [9]) == [1, 2, 3]
            await c.delete("group:1")
            return out
        finally:
            await c.close()

    results = asyncio.run(main())
    assert calls == 1
    assert results == [[1, 2, 3]] * 1000


def test_a_cancelled_waiter_does_not_cancel_the_shared_load(redis_url: str) -> None:
    calls = 0

    async def loader() -> str:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.2)
        return "v"

    async def main() -> None:
        c = cache.new_async(unique_service("aside"), **address_of(redis_url))
        try:
            aside = c.aside(ttl=30)
            first = asyncio.ensure_future(aside.get("k", loader))
            await asyncio.sleep(0.05)
            second = asyncio.ensure_future(aside.get("k", loader))
            await asyncio.sleep(0.01)
            first.cancel()
            assert await second == "v"
            assert calls == 1
            await c.delete("k")
        finally:
            await c.close()

    asyncio.run(main())


@pytest.mark.parametrize("lock", [True, False])
def test_cross_process_single_flight_through_the_redis_lock(
    redis_url: str, raw: redis.Redis, lock: bool
) -> None:
    """Eight caches (eight processes' worth of in-process state) miss one key together: with the
    Redis lock the loader runs once; without it, once per cache (the test can tell)."""
    service = unique_service("aside")
    caches = [cache.new(service, **address_of(redis_url)) for _ in range(8)]
    loader = Counting("profile", delay=0.3)
    start = threading.Barrier(8)
    results: list[Any] = []

    def worker(c: cache.Cache) -> None:
        aside = c.aside(ttl=30, lock=lock)
        start.wait()
        results.append(aside.get("user:1", loader))

    threads = [threading.Thread(target=worker, args=(c,)) for c in caches]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results == ["profile"] * 8
        assert loader.calls == (1 if lock else 8)
        assert raw.exists(caches[0].key_prefix + "user:1:lock") == 0  # released
    finally:
        raw.delete(caches[0].key_prefix + "user:1")
        for c in caches:
            c.close()


def test_lock_wait_is_bounded(redis_url: str, raw: redis.Redis) -> None:
    """A slow holder of the lock delays other processes by lock_wait at most: then they load."""
    service = unique_service("aside")
    holder = cache.new(service, **address_of(redis_url), aside={"lock": True, "lockWait": 0.3})
    other = cache.new(service, **address_of(redis_url), aside={"lock": True, "lockWait": 0.3})
    slow = Counting("slow", delay=2.0)
    try:
        t = threading.Thread(target=lambda: holder.aside().get("k", slow))
        t.start()
        time.sleep(0.1)
        started = time.monotonic()
        fast = Counting("fast")
        assert other.aside().get("k", fast) == "fast"
        assert 0.25 < time.monotonic() - started < 1.5
        assert fast.calls == 1
        t.join()
    finally:
        raw.delete(holder.key_prefix + "k")
        holder.close()
        other.close()


def test_not_found_is_cached_under_its_own_ttl(make_cache: Any) -> None:
    c = make_cache()
    aside = c.aside(ttl=30, not_found_ttl=0.3)
    missing = Counting(None)
    assert aside.get("user:404", missing) is None
    assert aside.get("user:404", missing) is None
    assert missing.calls == 1  # the second call was answered by the cached "not found"
    time.sleep(0.4)
    found = Counting({"id": 404})
    assert aside.get("user:404", found) == {"id": 404}
    assert found.calls == 1


def test_ttl_jitter_spreads_expiries(make_cache: Any) -> None:
    c = make_cache()
    aside = c.aside(ttl=10, jitter=0.5)
    ttls = []
    for i in range(20):
        aside.get(f"k{i}", Counting(i))
        ttls.append(c.ttl(f"k{i}"))
    assert all(4.9 <= t <= 10.0 for t in ttls), ttls
    assert max(ttls) - min(ttls) > 0.5, ttls  # 20 draws from [5, 10]: spread out
    plain = c.aside(ttl=10, jitter=0.0)
    plain.get("fixed", Counting(1))
    assert c.ttl("fixed") > 9.5


def test_stale_value_is_served_while_one_refresh_runs(make_cache: Any, flavor: str) -> None:
    c = make_cache()
    aside = c.aside(ttl=0.2, stale_ttl=10, jitter=0.0)
    assert aside.get("k", Counting("v1")) == "v1"
    time.sleep(0.3)  # past the TTL, inside the stale window
    refresh = (Counting if flavor == "sync" else AsyncCounting)("v2", delay=0.3)
    started = time.monotonic()
    assert aside.get("k", refresh) == "v1"  # stale, at once
    assert aside.get("k", refresh) == "v1"
    assert time.monotonic() - started < 0.25
    deadline = time.monotonic() + 3
    while aside.get("k", refresh) != "v2":
        assert time.monotonic() < deadline, "the background refresh never stored v2"
        pause(c, 0.02)
    assert refresh.calls == 1


def test_loader_errors_propagate_and_nothing_is_cached(make_cache: Any) -> None:
    c = make_cache()
    aside = c.aside()

    def boom() -> Any:
        raise LookupError("db down")

    with pytest.raises(LookupError, match="db down"):
        aside.get("k", boom)
    assert c.exists("k") == 0
    assert aside.get("k", Counting("ok")) == "ok"


def test_redis_down_serves_the_loader_value_uncached(make_cache: Any) -> None:
    c = make_cache(address="127.0.0.1:1", **FAST)
    loader = Counting("from-db")
    assert c.aside().get("k", loader) == "from-db"
    assert c.aside(lock=True).get("k", loader) == "from-db"
    assert loader.calls == 2


def test_a_value_not_written_by_aside_is_a_serialization_error(make_cache: Any) -> None:
    c = make_cache()
    c.set("plain", "text")
    with pytest.raises(cache.SerializationError, match="not written by cache-aside"):
        c.aside().get("plain", Counting(1))


def test_bad_arguments_are_typed_errors(make_cache: Any) -> None:
    c = make_cache()
    with pytest.raises(cache.CacheError, match="jitter"):
        c.aside(jitter=1.5)
    with pytest.raises(cache.CacheError, match="ttl"):
        c.aside(ttl=0)
    with pytest.raises(cache.CacheError, match="no keys"):
        c.aside().invalidate()
    with pytest.raises(cache.CacheConfigError, match="jitter"):
        make_cache(aside={"jitter": 2})


def _proxied(
    redis_url: str, make_cache: Callable[..., Any], retries: int, undeleted: list[Any]
) -> tuple[TcpProxy, Any]:
    addr = address_of(redis_url)
    proxy = TcpProxy(addr["address"])
    c = make_cache(
        address=proxy.endpoint,
        db=addr["db"],
        **FAST,
        aside={"invalidateRetries": retries, "invalidateBackoff": 0.1},
    )
    return proxy, c


def test_failed_invalidation_is_retried_in_the_background(
    redis_url: str, make_cache: Any, raw: redis.Redis
) -> None:
    proxy, c = _proxied(redis_url, make_cache, retries=8, undeleted=[])
    try:
        aside = c.aside(ttl=60)
        aside.get("user:1", Counting({"v": 1}))
        full = c.key_prefix + "user:1"
        assert raw.exists(full)
        proxy.cut()
        result = aside.invalidate("user:1")
        assert result.pending == ("user:1",) and not result.ok
        assert raw.exists(full)  # not deleted yet
        proxy.restore()
        deadline = time.monotonic() + 10
        while raw.exists(full):
            assert time.monotonic() < deadline, "the background retry never deleted the key"
            pause(c, 0.05)
        assert aside.undeleted() == frozenset()
    finally:
        proxy.cut()


def test_invalidation_reports_what_it_could_not_delete(
    redis_url: str, make_cache: Any, raw: redis.Redis
) -> None:
    proxy, c = _proxied(redis_url, make_cache, retries=2, undeleted=[])
    reported: list[tuple[str, ...]] = []
    try:
        aside = c.aside(ttl=60, on_undeleted=reported.append)
        aside.get("a", Counting(1))
        aside.get("b", Counting(2))
        proxy.cut()
        assert aside.invalidate("a", "b").pending == ("a", "b")
        deadline = time.monotonic() + 10
        while not reported:
            assert time.monotonic() < deadline, "the give-up was never reported"
            pause(c, 0.05)
        assert reported == [("a", "b")]
        assert aside.undeleted() == {"a", "b"}
        proxy.restore()
        assert aside.invalidate("a", "b").ok  # a later success clears the report
        assert aside.undeleted() == frozenset()
        assert not raw.exists(c.key_prefix + "a")
    finally:
        proxy.cut()
