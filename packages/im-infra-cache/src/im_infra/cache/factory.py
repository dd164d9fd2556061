"""``new`` and ``new_async``: a cache configured from ``redis.yaml`` through coord."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisClusterException, RedisError

from im_infra import clog, coord
from im_infra.cache._internal.backend import ASYNC, SYNC, Flavor, build_client, secrets_of
from im_infra.cache._internal.errors import scrub, translate
from im_infra.cache.client import AsyncRedisCache, RedisCache
from im_infra.cache.config import RedisConfig
from im_infra.cache.errors import CacheConfigError
from im_infra.cache.serializer import Serializer, get_serializer

if TYPE_CHECKING:
    from im_infra.cache.protocols import AsyncCache, Cache

__all__ = ["load_config", "new", "new_async"]

COMPONENT = "redis"
_log = clog.get_logger("cache")


def load_config(
    service_name: str,
    *,
    coord_provider: coord.Provider | None = None,
    env: str | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> RedisConfig:
    """Resolve ``redis.yaml`` for ``service_name``: defaults < global document < service document
    < ``overrides`` (etcd through ``coord_provider``, else ``$IM_INFRA_CONFIG_DIR``)."""
    if not service_name or not isinstance(service_name, str):
        raise CacheConfigError("service_name must be a non-empty string")
    try:
        return coord.load_component_config(
            COMPONENT,
            RedisConfig,
            service=service_name,
            provider=coord_provider,
            overrides=overrides,
            env=env,
        )
    except coord.ConfigError as exc:
        secrets = []
        for key in ("password", "sentinel_password", "sentinelPassword"):
            value = (overrides or {}).get(key)
            if isinstance(value, str):
                secrets.append(value)
        raise CacheConfigError(scrub(str(exc), tuple(secrets))) from exc


def _build(
    flavor: Flavor,
    service_name: str,
    coord_provider: coord.Provider | None,
    serializer: Serializer | None,
    env: str | None,
    overrides: Mapping[str, Any],
) -> tuple[Any, RedisConfig, Serializer]:
    cfg = load_config(service_name, coord_provider=coord_provider, env=env, overrides=overrides)
    ser = serializer if serializer is not None else get_serializer(cfg.serializer)
    try:
        client = build_client(cfg, flavor)  # cluster mode connects here to learn the slots
    except (RedisError, RedisClusterException) as exc:
        raise translate(exc, "connect", secrets_of(cfg)) from exc
    _log.info(
        "cache created",
        for_service=service_name,
        mode=cfg.mode,
        address=cfg.address if cfg.mode == "single" else ",".join(cfg.addresses),
        db=cfg.db,
        key_prefix=cfg.prefix_for(service_name),
        asyncio=flavor is ASYNC,
    )
    return client, cfg, ser


def new(
    service_name: str,
    *,
    coord: coord.Provider | None = None,
    serializer: Serializer | None = None,
    env: str | None = None,
    **overrides: Any,
) -> Cache:
    """A blocking :class:`Cache` for ``service_name``.

    Configuration comes from ``redis.yaml`` via coord (``coord`` provider, or the local
    ``$IM_INFRA_CONFIG_DIR`` without one); keyword ``overrides`` (snake_case or camelCase fields of
    :class:`RedisConfig`, e.g. ``address="10.0.0.5:6379"``, ``retry={"max_retries": 0}``) win.
    No connection is opened until the first command. Raises CacheConfigError on a bad config.
    """
    client, cfg, ser = _build(SYNC, service_name, coord, serializer, env, overrides)
    return RedisCache(client, config=cfg, service=service_name, serializer=ser)


def new_async(
    service_name: str,
    *,
    coord: coord.Provider | None = None,
    serializer: Serializer | None = None,
    env: str | None = None,
    **overrides: Any,
) -> AsyncCache:
    """An asyncio :class:`AsyncCache` for ``service_name`` (same configuration as :func:`new`)."""
    client, cfg, ser = _build(ASYNC, service_name, coord, serializer, env, overrides)
    return AsyncRedisCache(client, config=cfg, service=service_name, serializer=ser)
