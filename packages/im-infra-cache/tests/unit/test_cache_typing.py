"""The clients are typed by their implementation, and agree with the Protocols.

Checked by mypy --strict (scripts/typecheck): ``assert_type`` on the results of the concrete
clients' methods (types flowing from ``Ops``' reply transforms, ``_internal/command.py``), and
assignments of the concrete clients to the Protocols. At run time the same calls run against
``MemoryRedis`` and the values are checked to be of the types mypy was told
(tests/workspace/test_typing.py shows that mypy rejects a wrong type here).
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import AsyncIterator, Iterator
from typing import Any, assert_type

from im_infra.cache import (
    Aside,
    AsyncAside,
    AsyncCache,
    AsyncLimiter,
    AsyncLock,
    AsyncOnce,
    AsyncPipeline,
    AsyncRedisCache,
    Cache,
    Limiter,
    Lock,
    Once,
    Pipeline,
    RedisCache,
    TokenBucket,
)
from im_infra.cache.testing import MemoryRedis


def as_protocol(c: RedisCache) -> Cache:
    return c  # mypy: RedisCache implements Cache


def as_async_protocol(c: AsyncRedisCache) -> AsyncCache:
    return c  # mypy: AsyncRedisCache implements AsyncCache


def test_blocking_client_results_are_typed_by_construction() -> None:
    c = MemoryRedis().cache("typing")
    assert isinstance(c, RedisCache)
    protocol: Cache = as_protocol(c)
    assert protocol is c

    assert_type(c.set("s", "text", 60), bool)
    assert_type(c.get("s"), str | None)
    assert c.get("s") == "text"
    assert_type(c.get_bytes("s"), bytes | None)
    assert c.get_bytes("s") == b"text"
    assert_type(c.get_set("s", "new"), str | None)
    assert_type(c.setnx("n", 1), bool)
    assert_type(c.incr("n"), int)
    assert isinstance(c.incr("n"), int)
    assert_type(c.incr_float("f", 0.5), float)
    assert isinstance(c.incr_float("f", 0.5), float)
    assert_type(c.ttl("s"), float)
    assert isinstance(c.ttl("s"), float)
    assert_type(c.expire("s", 10), bool)
    assert_type(c.mget("s", "missing"), list[str | None])
    assert c.mget("s", "missing") == ["new", None]
    assert_type(c.mset({"a": 1}), None)
    assert_type(c.delete("a"), int)
    assert_type(c.exists("s"), int)
    assert_type(c.scan(), tuple[int, list[str]])
    assert_type(c.scan_iter(), Iterator[str])

    assert_type(c.hset("h", "f", "v"), int)
    assert_type(c.hget("h", "f"), str | None)
    assert_type(c.hgetall("h"), dict[str, str])
    assert c.hgetall("h") == {"f": "v"}
    assert_type(c.hkeys("h"), list[str])
    assert c.hkeys("h") == ["f"]
    assert_type(c.hvals("h"), list[str])
    assert_type(c.hexists("h", "f"), bool)
    assert_type(c.sadd("set", "m"), int)
    assert_type(c.smembers("set"), builtins.set[str])
    assert c.smembers("set") == {"m"}
    assert_type(c.zadd("z", {"m": 1.5}), int)
    assert_type(c.zscore("z", "m"), float | None)
    assert c.zscore("z", "m") == 1.5
    assert_type(c.zrank("z", "m"), int | None)
    assert_type(c.zrange("z"), list[Any])
    assert_type(c.rpush("l", "x"), int)
    assert_type(c.lrange("l"), list[str])
    assert c.lrange("l") == ["x"]
    assert_type(c.lpop("l"), str | None)
    assert_type(c.ltrim("l", 0, 1), None)
    assert_type(c.bf_add("bf", "item"), bool)
    assert c.bf_add("bf", "item") is False
    assert_type(c.bf_mexists("bf", ["item", "other"]), list[bool])
    assert_type(c.ping(), bool)
    assert c.ping() is True

    assert_type(c.pipeline(), Pipeline)
    assert_type(c.lock("job"), Lock)
    assert_type(c.aside(), Aside)
    assert_type(c.limiter("api", TokenBucket(rate=1, burst=1)), Limiter)
    assert_type(c.once("ns"), Once)
    assert isinstance(c.lock("job"), Lock) and isinstance(c.once("ns"), Once)
    c.close()


def test_asyncio_client_results_are_typed_by_construction() -> None:
    async def run() -> None:
        c = MemoryRedis().async_cache("typing")
        assert isinstance(c, AsyncRedisCache)
        protocol: AsyncCache = as_async_protocol(c)
        assert protocol is c

        assert_type(await c.set("s", "text"), bool)
        assert_type(await c.get("s"), str | None)
        assert await c.get("s") == "text"
        assert_type(await c.get_bytes("s"), bytes | None)
        assert_type(await c.incr("n"), int)
        assert_type(await c.ttl("s"), float)
        assert_type(await c.mget("s"), list[str | None])
        assert_type(await c.hkeys("h"), list[str])
        assert_type(await c.smembers("set"), builtins.set[str])
        assert_type(await c.zscore("z", "m"), float | None)
        assert_type(await c.lrange("l"), list[str])
        assert_type(await c.bf_exists("bf", "item"), bool)
        assert_type(await c.ping(), bool)
        assert await c.ping() is True
        assert_type(c.scan_iter(), AsyncIterator[str])
        assert_type(c.pipeline(), AsyncPipeline)
        assert_type(c.lock("job"), AsyncLock)
        assert_type(c.aside(), AsyncAside)
        assert_type(c.limiter("api", TokenBucket(rate=1, burst=1)), AsyncLimiter)
        assert_type(c.once("ns"), AsyncOnce)
        assert isinstance(c.lock("job"), AsyncLock)
        await c.close()

    asyncio.run(run())


def test_memory_redis_returns_the_protocols() -> None:
    redis = MemoryRedis()
    assert_type(redis.cache("typing"), Cache)
    assert_type(redis.async_cache("typing"), AsyncCache)
    assert isinstance(redis.cache("typing"), Cache)
    assert isinstance(redis.async_cache("typing"), AsyncCache)
