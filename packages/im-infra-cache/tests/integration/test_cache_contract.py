"""One set of behaviour tests, run against ``cache.testing.MemoryRedis`` and a real Redis, with
the blocking and the asyncio client each.

The memory half needs no server (``pytest
packages/im-infra-cache/tests/integration/test_cache_contract.py -k
memory``); the redis half uses ``$IM_INFRA_REDIS_URL``. A difference is a bug in the fake.
"""

from __future__ import annotations

import asyncio
import inspect
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis

from im_infra import cache
from im_infra.cache.testing import MemoryRedis

_WRAPPED = (cache.Lock, cache.AsyncLock, cache.Pipeline, cache.AsyncPipeline)


async def _collect(agen: Any) -> list[Any]:
    return [item async for item in agen]


class Sync:
    """Calls ``target``'s methods, running awaitables to completion on ``loop`` (asyncio
    flavour), so one test body drives both clients."""

    def __init__(self, target: Any, loop: asyncio.AbstractEventLoop | None) -> None:
        self._target = target
        self._loop = loop

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if not callable(attr):
            return attr

        def call(*a: Any, **kw: Any) -> Any:
            value = attr(*a, **kw)
            if self._loop is not None and inspect.isawaitable(value):
                value = self._loop.run_until_complete(value)
            if self._loop is not None and hasattr(value, "__aiter__"):
                value = self._loop.run_until_complete(_collect(value))
            if isinstance(value, _WRAPPED):
                return Sync(value, self._loop)
            return value

        return call


class Env:
    """A backend (memory or redis) in one flavour (sync or asyncio)."""

    def __init__(self, kind: str, flavor: str, redis_url: str | None) -> None:
        self.kind, self.flavor = kind, flavor
        self.loop = asyncio.new_event_loop() if flavor == "async" else None
        self.made: list[Any] = []
        if kind == "memory":
            self.memory: MemoryRedis | None = MemoryRedis()
            self.raw: redis.Redis = self.memory.client(db=0)
            self.address: dict[str, Any] = {"db": 0}  # over $IM_INFRA_REDIS_URL's, if set
        else:
            assert redis_url is not None
            self.memory = None
            self.raw = redis.Redis.from_url(redis_url)
            parts = urlsplit(redis_url)
            self.address = {
                "address": f"{parts.hostname}:{parts.port or 6379}",
                "db": int(parts.path.lstrip("/") or 0),
            }

    def cache(self, **overrides: Any) -> Any:
        service = f"ct-{uuid.uuid4().hex[:10]}"
        kw = {**self.address, **overrides}
        if self.memory is not None:
            c = (
                self.memory.async_cache(service, **kw)
                if self.loop
                else self.memory.cache(service, **kw)
            )
        else:
            c = cache.new_async(service, **kw) if self.loop else cache.new(service, **kw)
        self.made.append(c)
        return Sync(c, self.loop)

    def close(self) -> None:
        for c in self.made:
            keys = list(self.raw.scan_iter(match=c.key_prefix + "*", count=1000))
            if keys:
                self.raw.delete(*keys)
            result = c.close()
            if self.loop is not None:
                self.loop.run_until_complete(result)
        if self.loop is not None:
            self.loop.close()
        self.raw.close()


@pytest.fixture(params=["memory-sync", "memory-async", "redis-sync", "redis-async"])
def env(request: pytest.FixtureRequest) -> Iterator[Env]:
    kind, flavor = request.param.split("-")
    url = request.getfixturevalue("redis_url") if kind == "redis" else None
    e = Env(kind, flavor, url)
    yield e
    e.close()


def test_key_prefix_applied_and_hidden(env: Env) -> None:
    c = env.cache()
    assert c.key_prefix.startswith("ct-") and c.key_prefix.endswith(":")
    assert c.set("user:1", {"name": "ann"}) is True
    assert env.raw.get(c.key_prefix + "user:1") == b'{"name":"ann"}'
    assert env.raw.get("user:1") is None
    assert c.get_obj("user:1") == {"name": "ann"}
    c.set("user:2", "b")
    assert sorted(c.scan_iter("user:*")) == ["user:1", "user:2"]
    custom = env.cache(key_prefix="custom-" + uuid.uuid4().hex[:6] + "/")
    custom.set("k", "v")
    assert env.raw.get(custom.key_prefix + "k") == b"v"


def test_ttls(env: Env) -> None:
    c = env.cache()
    assert c.set("t", "v", 30) is True
    assert 29 < c.ttl("t") <= 30
    assert env.raw.ttl(c.key_prefix + "t") in (29, 30)
    assert c.persist("t") is True
    assert c.ttl("t") == -1.0
    assert c.ttl("missing") == -2.0
    assert c.setnx("n", "v", 0.2) is True
    assert c.setnx("n", "w") is False
    assert c.expire("t", 0.2) is True
    assert c.expire("missing", 5) is False
    time.sleep(0.35)
    assert c.get("t") is None and c.get("n") is None
    assert c.exists("t", "n") == 0


def test_strings_counters_and_types(env: Env) -> None:
    c = env.cache()
    assert c.get("missing") is None
    c.set("b", b"\x00\xff")
    assert c.get_bytes("b") == b"\x00\xff"
    with pytest.raises(cache.SerializationError):
        c.get("b")
    c.set("n", 41)
    assert c.incr("n") == 42 and c.decr("n", 2) == 40
    assert c.set("s", "x", xx=True) is False
    assert c.get_set("n", "new") == "40"
    assert c.mset({"a": "1", "o": {"x": 1}}) is None
    assert c.mget("a", "missing", "o") == ["1", None, '{"x":1}']
    with pytest.raises(cache.CacheResponseError, match="WRONGTYPE"):
        c.hget("a", "f")
    assert c.delete("a", "o", "missing") == 2


def test_collections(env: Env) -> None:
    c = env.cache()
    assert c.hset("h", "f1", "v1") == 1
    assert c.hmset("h", {"f2": 2}) == 1
    assert c.hgetall("h") == {"f1": "v1", "f2": "2"}
    assert c.hincrby("h", "f2", 5) == 7
    assert c.sadd("s", "a", "b") == 2 and c.smembers("s") == {"a", "b"}
    assert c.zadd("z", {"a": 1, "b": 2}) == 2
    assert c.zrange("z", 0, -1, withscores=True) == [("a", 1.0), ("b", 2.0)]
    assert c.rpush("l", "a", "b") == 2 and c.lpop("l") == "a"
    assert c.lrange("l") == ["b"]


def test_pipeline_and_transaction(env: Env) -> None:
    c = env.cache()
    p = c.pipeline(transaction=False)
    p.set("a", "1")
    p.incr("a")
    p.get("a")
    assert p.execute() == [True, 2, "2"]
    assert env.raw.get(c.key_prefix + "a") == b"2"
    c.set("w", "1")
    tx = c.pipeline()
    tx.watch("w")
    tx.multi()
    tx.set("w", "2")
    c.set("w", "changed")
    with pytest.raises(cache.CacheWatchError):
        tx.execute()
    tx.reset()
    assert c.get("w") == "changed"


def test_scripts_reload_after_flush(env: Env) -> None:
    c = env.cache()
    script = c.register_script(
        "redis.call('SET', KEYS[1], ARGV[1]); return redis.call('GET', KEYS[1])"
    )
    assert c.run_script(script, ["k"], ["v1"]) == "v1"
    env.raw.script_flush()
    assert c.run_script(script, ["k"], ["v2"]) == "v2"
    assert env.raw.get(c.key_prefix + "k") == b"v2"


def test_locks(env: Env) -> None:
    c = env.cache()
    a, b = c.lock("job", ttl=10), c.lock("job", ttl=10, timeout=0.2)
    assert a.try_acquire() is True
    assert env.raw.get(c.key_prefix + "job") == a.token.encode()
    assert b.try_acquire() is False
    started = time.monotonic()
    with pytest.raises(cache.LockTimeout):
        b.acquire()
    assert 0.15 < time.monotonic() - started < 5
    with pytest.raises(cache.LockLost):
        b.release()
    a.release()
    assert a.locked() is False
    short = c.lock("short", ttl=0.1)
    assert short.try_acquire() is True
    time.sleep(0.25)
    with pytest.raises(cache.LockLost):
        short.release()


def test_bloom_filter(env: Env) -> None:
    c = env.cache()
    assert c.bf_add("bf", "x") is True
    assert c.bf_add("bf", "x") is False
    assert c.bf_exists("bf", "x") is True
    assert c.bf_mexists("bf", ["x", "never-added"]) == [True, False]


def test_closed_cache_refuses_commands(env: Env) -> None:
    c = env.cache()
    c.close()
    with pytest.raises(cache.CacheError, match="closed"):
        c.get("k")


@pytest.fixture(params=["memory", "redis"])
def blocking(request: pytest.FixtureRequest) -> Iterator[Env]:
    """The blocking client only (for the callbacks-taking features below)."""
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    e = Env(request.param, "sync", url)
    yield e
    e.close()


def test_aside_loads_once_and_invalidates(blocking: Env) -> None:
    c = blocking.cache()
    aside = c.aside(ttl=30)
    loads: list[str] = []

    def load() -> dict[str, int]:
        loads.append("x")
        return {"v": len(loads)}

    assert aside.get("k", load) == {"v": 1}
    assert aside.get("k", load) == {"v": 1}
    assert loads == ["x"]
    aside.invalidate("k")
    assert aside.get("k", load) == {"v": 2}


def test_rate_limits(blocking: Env) -> None:
    c = blocking.cache()
    window = c.limiter("w", cache.SlidingWindow(limit=2, window=60))
    assert [window.allow("u").allowed for _ in range(3)] == [True, True, False]
    assert window.allow("other").allowed is True
    bucket = c.limiter("b", cache.TokenBucket(rate=0.001, burst=2))
    results = [bucket.allow("u") for _ in range(3)]
    assert [r.allowed for r in results] == [True, True, False]
    assert results[2].retry_after > 0 and results[2].limit == 2


def test_idempotency_keys(blocking: Env) -> None:
    c = blocking.cache()
    once = c.once("payments")
    calls: list[int] = []

    def charge() -> str:
        calls.append(1)
        return "charged"

    first, second = once.run("order-1", charge), once.run("order-1", charge)
    assert (first.value, first.duplicate) == ("charged", False)
    assert (second.value, second.duplicate) == ("charged", True)
    assert calls == [1]
