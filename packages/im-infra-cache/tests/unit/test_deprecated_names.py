"""Renamed public names (docs/naming.md) still work for one minor version, with a warning."""

import asyncio
import importlib

import pytest

from im_infra import cache, coord


@pytest.mark.parametrize(
    ("old", "new"), [("LockAcquireTimeout", "LockTimeout"), ("LockNotOwned", "LockLost")]
)
@pytest.mark.parametrize("module", ["im_infra.cache", "im_infra.cache.errors"])
def test_old_lock_error_names_are_deprecated_aliases(module: str, old: str, new: str) -> None:
    mod = importlib.import_module(module)
    with pytest.warns(DeprecationWarning, match=rf"{old} is deprecated .*0\.2\.0.*use {new}"):
        alias = getattr(mod, old)
    assert alias is getattr(cache, new)
    assert old not in cache.__all__


def test_lock_errors_have_coords_names_and_bases() -> None:
    assert issubclass(cache.LockTimeout, TimeoutError) and issubclass(
        coord.LockTimeout, TimeoutError
    )
    assert issubclass(cache.LockLost, cache.LockError)
    with pytest.warns(DeprecationWarning, match="LockAcquireTimeout"):
        old: type[BaseException] = getattr(cache, "LockAcquireTimeout")  # noqa: B009
    with pytest.raises(old):  # an old ``except`` clause still catches the new error
        raise cache.LockTimeout("x")


def test_set_nx_is_a_deprecated_alias_of_setnx_sync_and_asyncio() -> None:
    from im_infra.cache.testing import MemoryRedis

    redis = MemoryRedis()
    c = redis.cache("svc")
    assert isinstance(c, cache.RedisCache)
    with pytest.warns(DeprecationWarning, match=r"set_nx is deprecated .*0\.2\.0.*use setnx"):
        assert c.set_nx("k", "v", 60) is True
    with pytest.warns(DeprecationWarning, match="set_nx"):
        assert c.set_nx("k", "w") is False
    assert c.get("k") == "v" and 0 < c.ttl("k") <= 60
    assert "set_nx" not in dir(cache.Cache) and "set_nx" not in dir(cache.AsyncCache)

    async def run() -> tuple[bool, bool]:
        async with redis.async_cache("svc") as a:
            assert isinstance(a, cache.AsyncRedisCache)
            with pytest.warns(DeprecationWarning, match="set_nx is deprecated"):
                first = await a.set_nx("k2", "v")
            with pytest.warns(DeprecationWarning, match="set_nx is deprecated"):
                second = await a.set_nx("k2", "w")
            return first, second

    assert asyncio.run(run()) == (True, False)
    assert c.get("k2") == "v"
    c.close()
