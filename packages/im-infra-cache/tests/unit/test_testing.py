"""cache.testing's own behaviour (the shared behaviour is in
packages/im-infra-cache/tests/integration/
test_cache_contract.py, run against the fake and a real Redis)."""

from __future__ import annotations

import asyncio
import sys

import pytest

from im_infra import cache
from im_infra.cache.testing import MemoryRedis


def test_sync_and_async_caches_of_one_server_share_data() -> None:
    redis = MemoryRedis()
    c = redis.cache("svc")
    c.set("k", {"v": 1}, 60)

    async def read() -> object:
        async with redis.async_cache("svc") as a:
            return await a.get_obj("k")

    assert asyncio.run(read()) == {"v": 1}
    assert MemoryRedis().cache("svc").get("k") is None  # another server: its own data
    redis.flushall()
    assert c.get("k") is None
    c.close()


def test_config_comes_from_overrides_like_cache_new() -> None:
    c = MemoryRedis().cache("svc", key_prefix="p/", db=3)
    assert c.key_prefix == "p/" and c.config.db == 3
    with pytest.raises(cache.CacheConfigError):
        MemoryRedis().cache("svc", db="not-a-number")
    with pytest.raises(cache.CacheConfigError, match="single"):
        MemoryRedis().cache("svc", mode="cluster", addresses=["h:1"])
    with pytest.raises(cache.CacheConfigError):
        MemoryRedis().cache("")
    with pytest.raises(cache.CacheConfigError, match="client-side caching"):
        MemoryRedis().cache("svc", local_cache={"prefixes": ["user:"]})


def test_missing_extra_is_a_typed_error_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "fakeredis", None)
    with pytest.raises(cache.CacheConfigError, match=r"im-infra-cache\[testing\]"):
        MemoryRedis()
