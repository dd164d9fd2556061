"""``new`` and ``new_async``: a cache configured from ``redis.yaml`` through coord."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisClusterException, RedisError

from im_infra import clog
from im_infra import coord as _coord
from im_infra.cache._internal.backend import ASYNC, SYNC, Flavor, build_client, secrets_of
from im_infra.cache._internal.errors import translate
from im_infra.cache.client import AsyncRedisCache, RedisCache
from im_infra.cache.config import LIVE_SECTIONS, REDIS, RedisConfig
from im_infra.cache.serializer import Serializer, get_serializer

if TYPE_CHECKING:
    from im_infra.cache.protocols import AsyncCache, Cache

__all__ = ["load_config", "new", "new_async"]

COMPONENT = REDIS.name
_log = clog.get_logger("cache")


def load_config(
    service_name: str,
    *,
    coord: _coord.Provider | None = None,
    env: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    coord_provider: _coord.Provider | None = None,
) -> RedisConfig:
    """Resolve ``redis.yaml`` for ``service_name`` once, with coord's sources and precedence
    (docs/configuration.md; ``IM_INFRA_REDIS_URL`` is the short name of
    ``IM_INFRA_REDIS_ADDRESS``). ``coord_provider=`` is the deprecated spelling of ``coord=``."""
    provider = _coord.pick_provider(coord, where="cache.load_config", coord_provider=coord_provider)
    return _coord.load_component_config(
        REDIS, service=service_name, coord=provider, overrides=overrides, env=env
    )


def _follow(cache: RedisCache | AsyncRedisCache, live: _coord.LiveConfig[RedisConfig]) -> None:
    """Apply the live fields (``REDIS.live_fields``) of every later change to ``cache``."""

    def apply(old: RedisConfig, new: RedisConfig) -> None:
        sections = {name: getattr(new, name) for name in LIVE_SECTIONS}
        if any(getattr(old, name) != value for name, value in sections.items()):
            # the features read these sections from cache.config on every call; every other
            # field keeps the value the cache was built with
            cache._config = cache._config.model_copy(update=sections)
        if new.retry.max_retries != old.retry.max_retries:
            get_retry = getattr(cache.redis, "get_retry", None)
            retry = get_retry() if get_retry is not None else None
            if retry is not None:
                retry.update_retries(new.retry.max_retries)
                _log.info(
                    "cache retry count changed",
                    for_service=cache.service,
                    max_retries=new.retry.max_retries,
                )

    live.on_change(apply)
    live.close_with(cache)


def _build(
    flavor: Flavor,
    service_name: str | None,
    provider: _coord.Provider | None,
    serializer: Serializer | None,
    env: str | None,
    overrides: Mapping[str, Any],
) -> tuple[Any, _coord.LiveConfig[RedisConfig], Serializer]:
    live = _coord.live_config(
        REDIS, service_name, coord=provider, overrides=overrides or None, env=env
    )
    cfg = live.value
    service_name = live.service
    ser = serializer if serializer is not None else get_serializer(cfg.serializer)
    try:
        client = build_client(cfg, flavor)  # cluster mode connects here to learn the slots
    except (RedisError, RedisClusterException) as exc:
        live.close()
        raise translate(exc, "connect", secrets_of(cfg)) from exc
    _log.info(
        "cache created",
        for_service=service_name,
        mode=cfg.mode,
        address=cfg.address if cfg.mode == "single" else ",".join(cfg.addresses),
        db=cfg.db,
        key_prefix=cfg.prefix_for(service_name),
        asyncio=flavor is ASYNC,
        config_source=live.source,
    )
    return client, live, ser


def new(
    service_name: str | None = None,
    *,
    coord: _coord.Provider | None = None,
    serializer: Serializer | None = None,
    env: str | None = None,
    **overrides: Any,
) -> Cache:
    """A blocking :class:`Cache` for ``service_name``.

    Configuration is ``redis.yaml`` through coord (docs/configuration.md): the ``coord``
    provider, else the process's default one (``$IM_INFRA_ETCD_ENDPOINTS``), else
    ``$IM_INFRA_CONFIG_DIR`` and the defaults; the environment (``IM_INFRA_REDIS_URL``,
    ``IM_INFRA_REDIS_<FIELD>``) and then keyword ``overrides`` (snake_case or camelCase fields of
    :class:`RedisConfig`, e.g. ``address="10.0.0.5:6379"``, ``retry={"max_retries": 0}``) win.
    ``retry.max_retries`` and the ``aside``, ``rateLimit`` and ``once`` sections are applied
    live; other changes are logged as needing a restart.
    No connection is opened until the first command. Raises CacheConfigError on a bad config.
    """
    client, live, ser = _build(SYNC, service_name, coord, serializer, env, overrides)
    cache = RedisCache(client, config=live.value, service=live.service, serializer=ser)
    _follow(cache, live)
    return cache


def new_async(
    service_name: str | None = None,
    *,
    coord: _coord.Provider | None = None,
    serializer: Serializer | None = None,
    env: str | None = None,
    **overrides: Any,
) -> AsyncCache:
    """An asyncio :class:`AsyncCache` for ``service_name`` (same configuration as :func:`new`)."""
    client, live, ser = _build(ASYNC, service_name, coord, serializer, env, overrides)
    cache = AsyncRedisCache(client, config=live.value, service=live.service, serializer=ser)
    _follow(cache, live)
    return cache
