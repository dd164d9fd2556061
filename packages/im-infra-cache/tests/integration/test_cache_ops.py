"""Every operation against the real Redis, through the blocking and the asyncio cache."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis

from im_infra import cache

pytestmark = pytest.mark.integration


def test_prefix_is_applied_and_never_seen(cc: Any, raw: redis.Redis) -> None:
    assert cc.set("user:1", "ann") is True
    assert raw.get(cc.key_prefix + "user:1") == b"ann"
    assert raw.get("user:1") is None
    assert cc.get("user:1") == "ann"


def test_strings(cc: Any) -> None:
    assert cc.get("missing") is None
    assert cc.get_bytes("missing") is None
    assert cc.set("s", "héllo") is True
    assert cc.get("s") == "héllo"
    assert cc.set("b", b"\x00\xff") is True
    assert cc.get_bytes("b") == b"\x00\xff"
    with pytest.raises(cache.SerializationError):
        cc.get("b")
    assert cc.set("o", {"a": [1, 2]}) is True
    assert cc.get_obj("o") == {"a": [1, 2]}
    assert json.loads(cc.get("o")) == {"a": [1, 2]}
    assert cc.set("n", 41) is True
    assert cc.incr("n") == 42
    assert cc.decr("n", 2) == 40
    assert cc.incr_float("n", 0.5) == 40.5
    assert cc.setnx("s", "other") is False
    assert cc.setnx("fresh", "v", 10) is True
    assert cc.set("s", "x", xx=True) is True
    assert cc.set("nope", "x", xx=True) is False
    assert cc.get_set("s", "new") == "x"
    assert cc.get_set("gs-missing", "v") is None
    assert cc.exists("s", "b", "missing") == 2
    assert cc.delete("s", "b", "missing") == 2
    assert cc.get("s") is None


def test_expiration(cc: Any) -> None:
    assert cc.set("e", "v", 30) is True
    assert 0 < cc.ttl("e") <= 30
    assert cc.persist("e") is True
    assert cc.ttl("e") == -1.0
    assert cc.ttl("missing") == -2.0
    assert cc.expire("e", 0.05) is True
    assert cc.expire("missing", 5) is False
    cc.redis  # noqa: B018 - attribute access works through the wrapper
    import time

    deadline = time.monotonic() + 5
    while cc.get("e") is not None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert cc.get("e") is None


def test_mget_mset(cc: Any) -> None:
    assert cc.mset({"a": "1", "b": 2, "c": {"x": 1}}) is None
    assert cc.mget("a", "b", "missing", "c") == ["1", "2", None, '{"x":1}']


def test_hashes(cc: Any) -> None:
    assert cc.hset("h", "f1", "v1") == 1
    assert cc.hset("h", "f1", "v2") == 0
    assert cc.hmset("h", {"f2": 2, "f3": {"k": "v"}}) == 2
    assert cc.hsetnx("h", "f2", "x") is False
    assert cc.hget("h", "f1") == "v2"
    assert cc.hget("h", "nope") is None
    assert cc.hget_obj("h", "f3") == {"k": "v"}
    assert cc.hmget("h", "f1", "nope", "f2") == ["v2", None, "2"]
    assert cc.hgetall("h") == {"f1": "v2", "f2": "2", "f3": '{"k":"v"}'}
    assert cc.hgetall("missing") == {}
    assert cc.hexists("h", "f1") is True
    assert cc.hexists("h", "nope") is False
    assert cc.hlen("h") == 3
    assert cc.hincrby("h", "f2", 5) == 7
    assert sorted(cc.hkeys("h")) == ["f1", "f2", "f3"]
    assert sorted(cc.hvals("h")) == sorted(["7", "v2", '{"k":"v"}'])
    assert cc.hdel("h", "f1", "nope") == 1


def test_sets(cc: Any) -> None:
    assert cc.sadd("s", "a", "b", "c") == 3
    assert cc.sadd("s", "a") == 0
    assert cc.smembers("s") == {"a", "b", "c"}
    assert cc.smembers("missing") == set()
    assert cc.sismember("s", "a") is True
    assert cc.sismember("s", "z") is False
    assert cc.scard("s") == 3
    assert cc.srem("s", "a", "z") == 1
    assert cc.spop("s") in {"b", "c"}
    assert cc.spop("missing") is None


def test_sorted_sets(cc: Any) -> None:
    assert cc.zadd("z", {"a": 1, "b": 2, "c": 3.5}) == 3
    assert cc.zadd("z", {"a": 0.5}, gt=True) == 0
    assert cc.zscore("z", "a") == 1.0
    assert cc.zscore("z", "nope") is None
    assert cc.zincrby("z", "a", 10) == 11.0
    assert cc.zcard("z") == 3
    assert cc.zcount("z", 2, "+inf") == 3
    assert cc.zcount("z", "(2", 4) == 1
    assert cc.zrank("z", "b") == 0
    assert cc.zrevrank("z", "b") == 2
    assert cc.zrank("z", "nope") is None
    assert cc.zrange("z") == ["b", "c", "a"]
    assert cc.zrange("z", 0, 0, withscores=True) == [("b", 2.0)]
    assert cc.zrevrange("z", 0, 1) == ["a", "c"]
    assert cc.zrange_by_score("z", 2, 4) == ["b", "c"]
    assert cc.zrange_by_score("z", withscores=True, offset=1, count=1) == [("c", 3.5)]
    assert cc.zrevrange_by_score("z", "+inf", 3) == ["a", "c"]
    assert cc.zrem("z", "a", "nope") == 1
    assert cc.zremrange_by_score("z", 0, 2) == 1
    assert cc.zadd("z", {"d": 9, "e": 10}) == 2
    assert cc.zremrange_by_rank("z", 0, 0) == 1
    assert cc.zrange("z") == ["d", "e"]


def test_lists(cc: Any) -> None:
    assert cc.rpush("l", "a", "b") == 2
    assert cc.lpush("l", "z") == 3
    assert cc.rpush("l", 1, {"x": 1}) == 5
    assert cc.lrange("l") == ["z", "a", "b", "1", '{"x":1}']
    assert cc.lindex("l", 1) == "a"
    assert cc.lindex("l", 99) is None
    assert cc.llen("l") == 5
    assert cc.lpop("l") == "z"
    assert cc.rpop("l") == '{"x":1}'
    assert cc.rpush("l", "a") == 4
    assert cc.lrem("l", 0, "a") == 2
    assert cc.ltrim("l", 0, 0) is None
    assert cc.lrange("l") == ["b"]
    assert cc.lpop("missing") is None


def test_wrong_type_is_a_response_error(cc: Any) -> None:
    cc.set("str", "v")
    with pytest.raises(cache.CacheResponseError, match="WRONGTYPE"):
        cc.hget("str", "f")
    with pytest.raises(cache.CacheResponseError):
        cc.incr("str")


def test_pluggable_serializer(make_cache: Any) -> None:
    class Upper:
        def dumps(self, value: Any) -> bytes:
            return repr(value).upper().encode()

        def loads(self, data: bytes) -> Any:
            return data.decode().lower()

    c = make_cache(serializer=Upper())
    c.set("k", ["a"])
    assert c.get("k") == "['A']"
    assert c.get_obj("k") == "['a']"
    assert isinstance(c.serializer, Upper)


def test_ping(cc: Any) -> None:
    assert cc.ping() is True


def test_pipeline_prefixes_and_transforms(cc: Any, raw: redis.Redis) -> None:
    p = cc.pipeline(transaction=False)
    p.set("a", "1").incr("a").get("a").hset("h", "f", "v").hgetall("h").zadd("z", {"m": 1})
    p.zrange("z", withscores=True)
    assert len(p.target) == 7
    assert p.execute() == [True, 2, "2", 1, {"f": "v"}, 1, [("m", 1.0)]]
    assert raw.get(cc.key_prefix + "a") == b"2"
    assert p.execute() == []


def test_transaction_is_atomic_and_watch_detects_changes(cc: Any) -> None:
    tx = cc.pipeline()
    tx.set("k", "1").incr("k")
    assert tx.execute() == [True, 2]
    cc.set("w", "1")
    tx.watch("w")
    assert tx.get("w") == "1"  # immediate after WATCH
    tx.multi()
    tx.set("w", "2")
    cc.set("w", "changed")  # another client writes the watched key
    with pytest.raises(cache.CacheWatchError):
        tx.execute()
    tx.reset()
    assert cc.get("w") == "changed"


def test_pipeline_command_error_is_translated(cc: Any) -> None:
    cc.set("str", "v")
    p = cc.pipeline(transaction=False)
    p.hget("str", "f")
    with pytest.raises(cache.CacheResponseError, match="WRONGTYPE"):
        p.execute()


def test_scripts_run_by_sha_and_reload_after_flush(cc: Any, raw: redis.Redis) -> None:
    script = cc.register_script(
        "redis.call('SET', KEYS[1], ARGV[1]); return {KEYS[1], redis.call('GET', KEYS[1])}"
    )
    assert script(["k"], ["v1"]) == [cc.key_prefix + "k", "v1"]
    assert raw.script_exists(script.sha) == [True]
    raw.script_flush()
    assert cc.run_script(script.target, ["k"], [2]) == [cc.key_prefix + "k", "2"]
    raw.script_flush()  # and in a pipeline
    p = cc.pipeline()
    script(["k"], ["v3"], client=p.target)
    p.get("k")
    assert p.execute() == [[cc.key_prefix + "k", "v3"], "v3"]


def test_script_error(cc: Any) -> None:
    bad = cc.register_script("return redis.call('NOSUCHCOMMAND')")
    with pytest.raises(cache.CacheResponseError):
        bad()


async def test_asyncio_concurrency_beyond_the_pool_waits_instead_of_failing(redis_url: str) -> None:
    import asyncio

    from .conftest import address_of, unique_service

    async with cache.new_async(unique_service("conc"), pool_size=3, **address_of(redis_url)) as c:
        await c.set("k", "v")
        results = await asyncio.gather(*(c.get("k") for _ in range(200)))
        assert results == ["v"] * 200
        replies = await asyncio.gather(*(c.pipeline(False).incr("n").execute() for _ in range(20)))
        assert sorted(r[0] for r in replies) == list(range(1, 21))
        await c.delete("k", "n")


def test_threads_share_one_blocking_cache(redis_url: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from .conftest import address_of, unique_service

    with cache.new(unique_service("thr"), pool_size=2, **address_of(redis_url)) as c:
        with ThreadPoolExecutor(8) as pool:
            assert sorted(pool.map(lambda _: c.incr("n"), range(100))) == list(range(1, 101))
        c.delete("n")


def test_closed_cache_refuses_commands(cc: Any) -> None:
    assert cc.set("k", "v") is True
    cc.close()
    cc.close()  # idempotent
    with pytest.raises(cache.CacheError, match="closed"):
        cc.get("k")
    with pytest.raises(cache.CacheError, match="closed"):
        cc.lock("l").try_acquire()
    with pytest.raises(cache.CacheError, match="closed"):
        cc.pipeline()


def all_keys(c: Any, match: str) -> list[str]:
    """Every key by SCAN steps (works the same through both flavours)."""
    cursor, seen = 0, []
    while True:
        cursor, keys = c.scan(cursor, match, 10)
        seen += keys
        if cursor == 0:
            return sorted(seen)


def test_scan_sees_only_this_prefix_unprefixed(cc: Any, raw: redis.Redis, flavor: str) -> None:
    for i in range(30):
        cc.set(f"user:{i}", i)
    cc.set("other", 1)
    raw.set(cc.key_prefix + "x", 1)  # a key of ours written by someone else
    raw.set("user:1", "not ours")
    seen = all_keys(cc, "user:*")
    assert sorted(seen) == sorted(f"user:{i}" for i in range(30))
    if flavor == "async":

        async def collect() -> list[str]:
            return [k async for k in cc.target.scan_iter("*")]

        everything = cc.wait(collect())
    else:
        everything = list(cc.scan_iter("*", count=7))
    assert sorted(everything) == sorted([*seen, "other", "x"])
    raw.delete("user:1")


def test_scan_escapes_glob_characters_in_the_prefix(make_cache: Any, raw: redis.Redis) -> None:
    c = make_cache(key_prefix="{service}:[a]*:")
    c.set("k", 1)
    raw.set(c.key_prefix.replace("[a]*", "a-other") + "k", 1)  # would match an unescaped glob
    try:
        assert all_keys(c, "*") == ["k"]
    finally:
        raw.delete(c.key_prefix.replace("[a]*", "a-other") + "k", c.key_prefix + "k")
