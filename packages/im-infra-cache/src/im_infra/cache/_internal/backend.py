"""Builds the redis-py client (single node, Sentinel or Cluster; blocking or asyncio) from a
RedisConfig. One function for both flavours: they differ only in the classes used."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.connection
import redis.asyncio.sentinel
import redis.cluster
import redis.sentinel
from redis.backoff import ExponentialBackoff

from im_infra.cache._internal.lifo import LifoQueue
from im_infra.cache._internal.retry import AsyncGatedRetry, GatedRetry
from im_infra.cache._internal.sent import CONNECTION_HOOKS, tracked
from im_infra.cache.config import RedisConfig


@dataclass(frozen=True)
class Flavor:
    """The redis-py classes of one flavour (blocking or asyncio)."""

    redis: Any
    pool: Any
    """Pool class of single mode: blocking for threads (on ``_internal/lifo.py``'s queue); asyncio
    waits on AsyncRedisCache's own ``Slots`` instead (redis.asyncio's BlockingConnectionPool costs
    ~25% CPU per command)."""
    connection: Any
    ssl_connection: Any
    sentinel: Any
    cluster: Any
    cluster_node: Any
    retry: Any
    """Retry class: redis-py's, gated to what is safe to repeat (``_internal/retry.py``)."""
    sentinel_connection: Any
    sentinel_ssl_connection: Any


# The connection classes (single and sentinel mode) are redis-py's, marking the errors
# raised before a command is written (``_internal/sent.py``). Cluster mode builds its connections
# from redis-py's own classes: there a failed unsafe write always counts as "may have run".


SYNC = Flavor(
    redis=redis.Redis,
    pool=redis.BlockingConnectionPool,
    connection=tracked(redis.Connection, CONNECTION_HOOKS),
    ssl_connection=tracked(redis.SSLConnection, CONNECTION_HOOKS),
    sentinel=redis.sentinel.Sentinel,
    cluster=redis.cluster.RedisCluster,
    cluster_node=redis.cluster.ClusterNode,
    retry=GatedRetry,
    sentinel_connection=tracked(redis.sentinel.SentinelManagedConnection, CONNECTION_HOOKS),
    sentinel_ssl_connection=tracked(redis.sentinel.SentinelManagedSSLConnection, CONNECTION_HOOKS),
)
ASYNC = Flavor(
    redis=redis.asyncio.Redis,
    pool=redis.asyncio.ConnectionPool,
    connection=tracked(redis.asyncio.connection.Connection, CONNECTION_HOOKS),
    ssl_connection=tracked(redis.asyncio.connection.SSLConnection, CONNECTION_HOOKS),
    sentinel=redis.asyncio.sentinel.Sentinel,
    cluster=redis.asyncio.cluster.RedisCluster,
    cluster_node=redis.asyncio.cluster.ClusterNode,
    retry=AsyncGatedRetry,
    sentinel_connection=tracked(redis.asyncio.sentinel.SentinelManagedConnection, CONNECTION_HOOKS),
    sentinel_ssl_connection=tracked(
        redis.asyncio.sentinel.SentinelManagedSSLConnection, CONNECTION_HOOKS
    ),
)


def secrets_of(cfg: RedisConfig) -> tuple[str, ...]:
    """The configured secrets (to scrub from error messages)."""
    return tuple(
        s.get_secret_value() for s in (cfg.password, cfg.sentinel_password) if s is not None
    )


def connection_kwargs(cfg: RedisConfig, flavor: Flavor) -> dict[str, Any]:
    """Keyword arguments of every connection (timeouts, auth, TLS, retries)."""
    kw: dict[str, Any] = {
        "username": cfg.username,
        "password": cfg.password.get_secret_value() if cfg.password else None,
        "socket_timeout": cfg.read_timeout,
        "socket_connect_timeout": cfg.connect_timeout,
        "socket_keepalive": True,
        "health_check_interval": cfg.health_check_interval,
        "protocol": 2,
        "decode_responses": False,
        "retry": flavor.retry(
            ExponentialBackoff(cap=cfg.retry.max_backoff, base=cfg.retry.min_backoff),
            cfg.retry.max_retries,
        ),
    }
    if cfg.client_name:
        kw["client_name"] = cfg.client_name
    if cfg.tls.enabled:
        insecure = cfg.tls.insecure_skip_verify
        kw.update(
            ssl_ca_certs=cfg.tls.ca_cert,
            ssl_certfile=cfg.tls.cert_file,
            ssl_keyfile=cfg.tls.key_file,
            ssl_cert_reqs="none" if insecure else "required",
            ssl_check_hostname=not insecure,
        )
    return kw


def build_client(cfg: RedisConfig, flavor: Flavor) -> Any:
    """The redis-py client for ``cfg``: ``Redis`` (single, sentinel master) or ``RedisCluster``."""
    kw = connection_kwargs(cfg, flavor)
    nodes = cfg.nodes()
    if cfg.mode == "cluster":
        if cfg.tls.enabled:
            kw["ssl"] = True
        return flavor.cluster(
            startup_nodes=[flavor.cluster_node(host, port) for host, port in nodes],
            max_connections=cfg.pool_size,
            **kw,
        )
    if cfg.mode == "sentinel":
        if cfg.tls.enabled:
            kw["ssl"] = True
        sentinel_kw = {
            "username": cfg.sentinel_username,
            "password": (
                cfg.sentinel_password.get_secret_value() if cfg.sentinel_password else None
            ),
            "socket_timeout": cfg.read_timeout,
            "socket_connect_timeout": cfg.connect_timeout,
        }
        sentinel = flavor.sentinel(nodes, sentinel_kwargs=sentinel_kw, **kw)
        return sentinel.master_for(
            cfg.master_name,
            db=cfg.db,
            max_connections=cfg.pool_size,
            connection_class=(
                flavor.sentinel_ssl_connection if cfg.tls.enabled else flavor.sentinel_connection
            ),
        )
    host, port = nodes[0]
    retry = kw["retry"]
    if flavor.pool is redis.BlockingConnectionPool:
        kw["timeout"] = cfg.connect_timeout  # waiting for a free connection
        kw["queue_class"] = LifoQueue  # (queue.LifoQueue's locking costs ~2 µs per command)
    pool = flavor.pool(
        connection_class=flavor.ssl_connection if cfg.tls.enabled else flavor.connection,
        max_connections=cfg.pool_size,
        host=host,
        port=port,
        db=cfg.db,
        **kw,
    )
    return flavor.redis(connection_pool=pool, retry=retry, protocol=2)
