"""Distributed lock and bloom filter against the real Redis (blocking and asyncio)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
import redis

from im_infra import cache

from .conftest import address_of, unique_service

pytestmark = pytest.mark.integration


def has_redisbloom(raw: redis.Redis) -> bool:
    modules = raw.execute_command("MODULE LIST")  # type: ignore[no-untyped-call]
    return any(m.get(b"name") == b"bf" for m in modules)


def test_lock_owner_token_semantics(cc: Any, raw: redis.Redis) -> None:
    a = cc.lock("job", ttl=10)
    b = cc.lock("job", ttl=10)
    assert a.token != b.token
    assert a.try_acquire() is True
    assert raw.get(cc.key_prefix + "job") == a.token.encode()
    assert b.try_acquire() is False
    assert a.owned() is True
    assert b.owned() is False
    assert b.locked() is True
    with pytest.raises(cache.LockLost):
        b.release()
    with pytest.raises(cache.LockLost):
        b.extend()
    assert raw.get(cc.key_prefix + "job") == a.token.encode()  # b's release did nothing
    a.extend(60)
    assert 50_000 < raw.pttl(cc.key_prefix + "job") <= 60_000
    a.release()
    assert a.locked() is False
    assert b.try_acquire() is True
    b.release()


def test_lock_acquire_waits_then_times_out(cc: Any) -> None:
    holder = cc.lock("busy", ttl=10)
    holder.acquire()
    waiter = cc.lock("busy", ttl=10, timeout=0.2)
    started = time.monotonic()
    with pytest.raises(cache.LockTimeout):
        waiter.acquire()
    assert time.monotonic() - started < 5
    holder.release()
    waiter.acquire(timeout=1)
    assert waiter.owned() is True
    waiter.release()


def test_lock_expires_and_release_after_expiry_is_not_owned(cc: Any) -> None:
    short = cc.lock("short", ttl=0.1)
    assert short.try_acquire() is True
    other = cc.lock("short", ttl=10)
    other.acquire(timeout=5)  # waits until the TTL frees it
    with pytest.raises(cache.LockLost):
        short.release()
    other.release()


def test_lock_acquire_waits_for_release(redis_url: str) -> None:
    with cache.new(unique_service("handoff"), **address_of(redis_url)) as c:
        first = c.lock("handoff", ttl=10)
        first.acquire()
        timer = threading.Timer(0.2, first.release)
        timer.start()
        second = c.lock("handoff", ttl=10)
        second.acquire(timeout=5)
        assert second.owned() is True
        second.release()
        timer.join()


def test_sync_lock_context_manager(redis_url: str) -> None:
    with cache.new(unique_service("lock"), **address_of(redis_url)) as c:
        with c.lock("cm", ttl=5) as lk:
            assert lk.owned() is True
            assert c.lock("cm").try_acquire() is False
        assert c.lock("cm").locked() is False


async def test_async_lock_context_manager(redis_url: str) -> None:
    async with cache.new_async(unique_service("alock"), **address_of(redis_url)) as c:
        order: list[str] = []

        async def worker(name: str) -> None:
            async with c.lock("cm", ttl=5, timeout=5):
                order.append(f"{name}-in")
                await asyncio.sleep(0.05)
                order.append(f"{name}-out")

        await asyncio.gather(worker("a"), worker("b"))
        assert order[0].endswith("-in") and order[1].endswith("-out")
        assert order[0][0] == order[1][0]  # no interleaving inside the critical section
        assert await c.lock("cm").locked() is False


def test_bloom_fallback(cc: Any, raw: redis.Redis) -> None:
    if has_redisbloom(raw):
        pytest.skip("this server has RedisBloom: the fallback is forced in test_bloom_forced_lua")
    cc.bf_reserve("bf", 0.01, 1000)
    with pytest.raises(cache.CacheResponseError, match="exists"):
        cc.bf_reserve("bf", 0.01, 1000)
    assert cc.bloom_backend == "lua"
    assert raw.getrange(cc.key_prefix + "bf", 0, 3) == b"IMBF"
    assert cc.bf_add("bf", "alice") is True
    assert cc.bf_add("bf", "alice") is False
    assert cc.bf_exists("bf", "alice") is True
    assert cc.bf_exists("bf", "bob") is False
    assert cc.bf_exists("never-created", "x") is False
    items = [f"user-{i}" for i in range(1000)]
    assert all(cc.bf_madd("bf", items[:500]))
    assert sum(cc.bf_madd("bf", items[500:])) >= 480
    assert all(cc.bf_mexists("bf", items))  # no false negatives
    false_positives = sum(cc.bf_mexists("bf", [f"other-{i}" for i in range(2000)]))
    assert false_positives < 100  # 1% expected, 5% allowed


def test_bloom_add_creates_default_filter_and_rejects_other_types(cc: Any) -> None:
    assert cc.bf_add("auto", 42) is True
    assert cc.bf_exists("auto", 42) is True
    assert cc.bf_exists("auto", "42") is True  # 42 is stored as its decimal text
    cc.hset("hash", "f", "v")
    with pytest.raises(cache.CacheResponseError, match="WRONGTYPE"):
        cc.bf_add("hash", "x")
    cc.set("plain", "short")
    with pytest.raises(cache.CacheResponseError, match="bloom"):
        cc.bf_exists("plain", "x")


def test_bloom_forced_lua(make_cache: Any) -> None:
    c = make_cache(bloom="lua")
    assert c.bloom_backend == "lua"
    assert c.bf_add("f", b"\x00bin") is True
    assert c.bf_exists("f", b"\x00bin") is True


def test_bloom_module_path(make_cache: Any, raw: redis.Redis) -> None:
    """RedisBloom path: runs only where the server has the module (this machine's has not)."""
    c = make_cache(bloom="module")
    if not has_redisbloom(raw):
        with pytest.raises(cache.CacheResponseError, match="unknown command"):
            c.bf_add("m", "x")  # forced module mode never falls back
        pytest.skip("no RedisBloom module on this server: module path not exercised")
    c.bf_reserve("m", 0.01, 100)
    assert c.bf_add("m", "x") is True
    assert c.bf_exists("m", "x") is True
    assert c.bf_exists("m", "y") is False
