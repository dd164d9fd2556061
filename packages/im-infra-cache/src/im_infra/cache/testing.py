"""Testing helpers for services that use cache: the real cache over an in-memory Redis.

:class:`MemoryRedis` is a Redis server held in memory (fakeredis, Lua scripts included);
:meth:`MemoryRedis.cache` and :meth:`MemoryRedis.async_cache` return the same
:class:`~im_infra.cache.RedisCache` / :class:`~im_infra.cache.AsyncRedisCache` as
:func:`~im_infra.cache.new` / :func:`~im_infra.cache.new_async`, configured the same way
(``redis.yaml`` through coord, then keyword overrides), so TTLs, the key prefix, locks, bloom
filters, pipelines and scripts all behave as on Redis (the contract tests in
``packages/im-infra-cache/tests/integration`` run the same tests against both). Needs the
``testing`` extra::

    pip install "im-infra-cache[testing]"

::

    from im_infra.cache.testing import MemoryRedis

    redis = MemoryRedis()
    c = redis.cache("im-logic")
    c.set("user:1", {"name": "ann"}, 60)
    assert c.get_obj("user:1") == {"name": "ann"}
    assert redis.client(c.config.db).ttl("im-logic:user:1") == 60  # the prefix is applied
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from im_infra import coord as _coord
from im_infra.cache._internal.fakelua import install_struct
from im_infra.cache.client import AsyncRedisCache, RedisCache
from im_infra.cache.config import REDIS, RedisConfig
from im_infra.cache.errors import CacheConfigError
from im_infra.cache.factory import _follow
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

    def client(self, db: int = 0) -> redis.Redis:
        """A raw redis-py client on database ``db`` of this server (keys as stored, prefix
        included)."""
        client: redis.Redis = self._fake.FakeRedis(server=self._server, db=db)
        return client

    def _config(
        self,
        service_name: str,
        coord: _coord.Provider | None,
        serializer: Serializer | None,
        env: str | None,
        overrides: dict[str, Any],
    ) -> tuple[_coord.LiveConfig[RedisConfig], Serializer]:
        """``redis.yaml`` resolved and followed live exactly as ``cache.new`` does."""
        live = _coord.live_config(
            REDIS, service_name, coord=coord, overrides=overrides or None, env=env
        )
        cfg = live.value
        problem = None
        if cfg.mode != "single":
            problem = f"MemoryRedis serves mode 'single' only (the config says {cfg.mode!r})"
        elif cfg.local_cache.prefixes:
            # its invalidations come over a connection of its own to the configured address
            problem = "MemoryRedis does not serve client-side caching: leave localCache empty"
        if problem is not None:
            live.close()
            raise CacheConfigError(problem)
        return live, serializer if serializer is not None else get_serializer(cfg.serializer)

    def cache(
        self,
        service_name: str,
        *,
        coord: _coord.Provider | None = None,
        serializer: Serializer | None = None,
        env: str | None = None,
        **overrides: Any,
    ) -> Cache:
        """A blocking cache, configured like :func:`im_infra.cache.new` (pass a
        ``coord.testing.MemoryEtcd`` provider as ``coord=`` for hermetic tests; address
        settings are ignored: every command goes to this in-memory server)."""
        live, ser = self._config(service_name, coord, serializer, env, overrides)
        client = self._fake.FakeRedis(server=self._server, db=live.value.db, protocol=2)
        cache = RedisCache(client, config=live.value, service=service_name, serializer=ser)
        _follow(cache, live)
        return cache

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
        live, ser = self._config(service_name, coord, serializer, env, overrides)
        client = self._fake.FakeAsyncRedis(server=self._server, db=live.value.db, protocol=2)
        cache = AsyncRedisCache(client, config=live.value, service=service_name, serializer=ser)
        _follow(cache, live)
        return cache

    def flushall(self) -> None:
        """Remove every key of every database."""
        self.client().flushall()
