"""The ``redis.yaml`` document: :class:`RedisConfig`.

Field names are snake_case in Python; the YAML document uses the camelCase aliases (``keyPrefix``,
``poolSize``, ...). Both spellings are accepted (``populate_by_name``). Durations accept seconds as
a number or Go-style strings (``"500ms"``, ``"3s"``, ``"1m30s"``): coord's shared
:func:`~im_infra.coord.parse_duration` (re-exported here for existing imports).
"""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import Field, SecretStr, model_validator
from pydantic.alias_generators import to_camel

from im_infra.cache._internal.model import Model as _Model
from im_infra.cache._internal.model import Seconds
from im_infra.cache.errors import CacheConfigError
from im_infra.cache.features import AsideConfig, LocalCacheConfig, OnceConfig, RateLimitConfig
from im_infra.coord import Component, Duration, parse_duration

__all__ = ["LIVE_SECTIONS", "REDIS", "RedisConfig", "RetryConfig", "TLSConfig", "parse_duration"]


class TLSConfig(_Model):
    """TLS to Redis (``rediss://``)."""

    enabled: bool = False
    ca_cert: str | None = None
    """PEM file with the CA that signed the server certificate (default: system store)."""
    cert_file: str | None = None
    """Client certificate (PEM) for mutual TLS."""
    key_file: str | None = None
    """Client private key (PEM) for mutual TLS."""
    insecure_skip_verify: bool = False
    """Do not verify the server certificate or host name (testing only)."""


class RetryConfig(_Model):
    """Retries of a command after a connection error or timeout, with exponential backoff."""

    max_retries: int = Field(default=3, ge=0, le=100)
    min_backoff: Seconds = 0.008
    """First backoff; doubles after every failure (``min_backoff * 2**n``) ..."""
    max_backoff: Seconds = 0.512
    """... up to this cap."""


class RedisConfig(_Model):
    """Configuration of one Redis deployment (document ``redis.yaml``).

    Defaults follow the Go original (go-redis): 127.0.0.1:6379, db 0, 5 s dial, 3 s read,
    3 retries with 8 ms..512 ms exponential backoff.
    """

    mode: Literal["single", "sentinel", "cluster"] = "single"
    address: str = "127.0.0.1:6379"
    """``host:port`` (single mode), or a ``redis://``/``rediss://`` URL whose user, password and
    db fill the fields not set explicitly."""
    addresses: list[str] = Field(default_factory=list)
    """Sentinel mode: the sentinels; cluster mode: the startup nodes (``host:port`` each).
    Empty: ``[address]``."""
    master_name: str = "mymaster"
    """Sentinel mode: the monitored master's name."""
    sentinel_username: str | None = None
    sentinel_password: SecretStr | None = None
    db: int = Field(default=0, ge=0)
    username: str | None = None
    """ACL user (Redis 6+); None uses ``default``."""
    password: SecretStr | None = None
    tls: TLSConfig = Field(default_factory=TLSConfig)
    key_prefix: str = "{service}:"
    """Prepended to every key; ``{service}`` is replaced by the service name. ``""`` disables."""
    pool_size: int = Field(default=50, ge=1)
    """Maximum connections per client (per node in cluster mode)."""
    connect_timeout: Seconds = 5.0
    read_timeout: Seconds = 3.0
    """Socket timeout of every command (read and write)."""
    retry: RetryConfig = Field(default_factory=RetryConfig)
    health_check_interval: Duration = 0.0
    """Seconds of idleness after which a pooled connection is PINGed before use (0: off)."""
    client_name: str | None = None
    """CLIENT SETNAME for every connection (default: the service name)."""
    serializer: Literal["json", "pickle"] = "json"
    """Serializer of values that are not bytes/str/int/float (see im_infra.cache.serializer)."""
    bloom: Literal["auto", "module", "lua"] = "auto"
    """Bloom filter backend: RedisBloom (``module``), the bitmap + Lua fallback (``lua``), or
    ``auto`` (the module when the server has it)."""
    # -- the hot-path features (sub-models in im_infra.cache.features; each says what is live) ---
    aside: AsideConfig = Field(default_factory=AsideConfig)
    """Cache-aside defaults (:mod:`im_infra.cache.aside`)."""
    local_cache: LocalCacheConfig = Field(default_factory=LocalCacheConfig)
    """Client-side caching (:mod:`im_infra.cache.local`); off by default."""
    rate_limit: RateLimitConfig = Field(default_factory=RateLimitConfig)
    """Named rate limits, and the fallback while Redis is unreachable (:mod:`.ratelimit`)."""
    once: OnceConfig = Field(default_factory=OnceConfig)
    """Idempotency keys (:mod:`im_infra.cache.once`)."""

    @model_validator(mode="before")
    @classmethod
    def _expand_url(cls, data: Any) -> Any:
        """``address: redis://user:pw@host:port/db`` fills username/password/db/tls."""
        if not isinstance(data, dict):
            return data
        key = "address" if "address" in data else None
        if key is None or not isinstance(data[key], str) or "://" not in data[key]:
            return data
        parts = urlsplit(data[key])
        if parts.scheme not in ("redis", "rediss"):
            raise ValueError(f"address: unsupported URL scheme {parts.scheme!r} (redis, rediss)")
        if not parts.hostname:
            raise ValueError("address: URL has no host")
        out = dict(data)
        out["address"] = f"{parts.hostname}:{parts.port or 6379}"

        def fill(field: str, value: Any) -> None:
            if (
                value is not None
                and value != ""
                and field not in out
                and to_camel(field) not in out
            ):
                out[field] = value

        fill("username", unquote(parts.username) if parts.username else None)
        fill("password", unquote(parts.password) if parts.password else None)
        path = parts.path.strip("/")
        if path:
            if not path.isdigit():
                raise ValueError("address: URL path must be a db number")
            fill("db", int(path))
        if parts.scheme == "rediss":
            tls = out.get("tls")
            if isinstance(tls, TLSConfig):
                tls = tls.model_dump()
            tls = dict(tls or {})
            if tls.get("enabled") is False:
                raise ValueError("address: rediss:// URL but tls.enabled is false")
            out["tls"] = {**tls, "enabled": True}
        return out

    @model_validator(mode="after")
    def _check(self) -> RedisConfig:
        for addr in [self.address, *self.addresses]:
            host, sep, port = addr.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"address {addr!r} is not host:port")
        if self.mode == "cluster" and self.db != 0:
            raise ValueError("db must be 0 in cluster mode (Redis Cluster has one database)")
        if self.local_cache.prefixes and self.mode != "single":
            raise ValueError(
                f"localCache: client-side caching needs mode 'single' (got {self.mode!r})"
            )
        return self

    def nodes(self) -> list[tuple[str, int]]:
        """The (host, port) pairs of ``addresses``, or of ``address`` when that is empty."""
        out = []
        for addr in self.addresses or [self.address]:
            host, _, port = addr.rpartition(":")
            out.append((host.strip("[]"), int(port)))
        return out

    def prefix_for(self, service: str) -> str:
        """The key prefix for ``service`` (``{service}`` substituted)."""
        return self.key_prefix.replace("{service}", service)


LIVE_SECTIONS = ("aside", "rate_limit", "once")
"""The feature sections a running cache takes from a changed document (read on every call)."""

REDIS: Component[RedisConfig] = Component(
    "redis",
    RedisConfig,
    # applied to a running cache: the retry count (redis-py's Retry.update_retries) and the
    # feature sections read on every call; every other field is fixed when the cache is built
    # and logged as needing a restart
    live_fields=frozenset({"retry.max_retries", *LIVE_SECTIONS}),
    env_aliases={"IM_INFRA_REDIS_URL": "address"},
    error=CacheConfigError,
)
"""The ``redis.yaml`` component as coord loads it (entry point ``im_infra.config: redis``)."""
