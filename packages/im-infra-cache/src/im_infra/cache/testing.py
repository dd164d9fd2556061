"""Testing helpers for services that use cache: the real cache over an in-memory Redis.

:class:`MemoryRedis` is a Redis server held in memory (fakeredis, Lua scripts included);
:meth:`MemoryRedis.cache` and :meth:`MemoryRedis.async_cache` return the same
:class:`~im_infra.cache.RedisCache` / :class:`~im_infra.cache.AsyncRedisCache` as
:func:`~im_infra.cache.new` / :func:`~im_infra.cache.new_async`, configured the same way
(``redis.yaml`` through coord, then keyword overrides), so TTLs, the key prefix, locks, bloom
filters, pipelines and scripts all behave as on Redis (the contract tests in
``tests-integration/cache`` run the same tests against both). Needs the ``testing`` extra::

    pip install "im-infra-cache[testing]"

::

    from im_infra.cache.testing import MemoryRedis

    redis = MemoryRedis()
    c = redis.cache("im-logic")
    c.set("user:1", {"name": "ann"}, 60)
    assert c.get_obj("user:1") == {"name": "ann"}
    assert redis.client().ttl("im-logic:user:1") == 60   # the prefix is applied
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from im_infra import coord as _coord
from im_infra.cache._internal.fakelua import install_struct
from im_infra.cache.client import AsyncRedisCache, RedisCache
from im_infra.cache.errors import CacheConfigError
from im_infra.cache.factory import load_config
from im_infra.cache.protocols import AsyncCache, Cache
from im_infra.cache.serializer import Serializer, get_serializer

if TYPE_CHECKING:
    import redis

__all__ = ["MemoryRedis"]

_EXTRA_HINT = (
    'im_infra.cache.testing needs the "testing" extra: pip install "im-infra-cache[testing]"'
)


def _fakeredis() -> Any:
    try:
        import fakeredis
        import lupa  # type: ignore[import-untyped]  # noqa: F401  (EVAL: locks, bloom)
    except ImportError as exc:
        raise CacheConfigError(f"{_EXTRA_HINT} (missing: {exc.name})") from exc
    return fakeredis


class MemoryRedis:
    """An in-memory Redis shared by the caches made from it (data, TTLs, scripts)."""

    def __init__(self) -> None:
        self._fake = _fakeredis()
        self._server = self._fake.FakeServer()
        install_struct(self._fake.FakeRedis(server=self._server), self._server)

    def client(self) -> redis.Redis:
        """A raw redis-py client on this server (keys as stored, prefix included)."""
        client: redis.Redis = self._fake.FakeRedis(server=self._server)
        return client

    def _parts(
        self,
        service_name: str,
        coord: _coord.Provider | None,
        serializer: Serializer | None,
        env: str | None,
        overrides: dict[str, Any],
    ) -> tuple[Any, Serializer]:
        cfg = load_config(service_name, coord_provider=coord, env=env, overrides=overrides)
        if cfg.mode != "single":
            raise CacheConfigError(
                f"MemoryRedis serves mode 'single' only (redis.yaml or overrides say {cfg.mode!r})"
            )
        if cfg.local_cache.prefixes:
            # its invalidations come over a connection of its own to the configured address
            raise CacheConfigError(
                "MemoryRedis does not serve client-side caching: leave localCache.prefixes empty"
            )
        return cfg, serializer if serializer is not None else get_serializer(cfg.serializer)

    def cache(
        self,
        service_name: str,
        *,
        coord: _coord.Provider | None = None,
        serializer: Serializer | None = None,
        env: str | None = None,
        **overrides: Any,
    ) -> Cache:
        """A blocking cache, configured like :func:`im_infra.cache.new` (address settings are
        ignored: every command goes to this in-memory server)."""
        cfg, ser = self._parts(service_name, coord, serializer, env, overrides)
        client = self._fake.FakeRedis(server=self._server, db=cfg.db, protocol=2)
        return RedisCache(client, config=cfg, service=service_name, serializer=ser)

    def async_cache(
        self,
        service_name: str,
        *,
        coord: _coord.Provider | None = None,
        serializer: Serializer | None = None,
        env: str | None = None,
        **overrides: Any,
    ) -> AsyncCache:
        """An asyncio cache, configured like :func:`im_infra.cache.new_async`."""
        cfg, ser = self._parts(service_name, coord, serializer, env, overrides)
        client = self._fake.FakeAsyncRedis(server=self._server, db=cfg.db, protocol=2)
        return AsyncRedisCache(client, config=cfg, service=service_name, serializer=ser)

    def flushall(self) -> None:
        """Remove every key of every database."""
        self.client().flushall()
