"""The ``redis.yaml`` sections of the hot-path features: ``aside``, ``localCache``, ``rateLimit``
and ``once`` (nested in :class:`~im_infra.cache.RedisConfig`, one field each).

Live fields: the features read these sections from the cache's current configuration on every
call, so the fields marked *live* below take effect on the next call once the configuration is
swapped by the config center; the others are read when the feature object is created (a new
cache picks them up).

    aside: {ttl: 5m, notFoundTtl: 30s, jitter: 0.1, staleTtl: 0, lock: false}
    localCache: {prefixes: ["user:", "group:"], maxEntries: 10000, maxAge: 60s}
    rateLimit:
      fallback: local            # local | allow | deny (Redis unreachable)
      limits:
        send: {algorithm: token_bucket, rate: 10, burst: 20}
        login: {algorithm: sliding_window, limit: 5, window: 1m}
    once: {inProgressTtl: 30s, doneTtl: 24h}
"""

from __future__ import annotations

import itertools
from typing import Annotated, Literal

from pydantic import Field, field_validator

from im_infra.cache._internal.model import Model, Seconds
from im_infra.coord import Duration

__all__ = [
    "AsideConfig",
    "LimitSpec",
    "LocalCacheConfig",
    "OnceConfig",
    "RateLimitConfig",
    "SlidingWindow",
    "TokenBucket",
]


class AsideConfig(Model):
    """Cache-aside defaults (a call's own arguments win). All fields live."""

    ttl: Seconds = 300.0
    """Time to live of a loaded value (live)."""
    not_found_ttl: Duration = Field(default=30.0, ge=0)
    """Time to live of a cached "not found" (the loader returned None); 0 does not cache it
    (live)."""
    jitter: float = Field(default=0.1, ge=0, lt=1)
    """Each TTL is shortened by a random fraction up to this (0.1: 90-100 % of the TTL), so keys
    loaded together do not expire together (live)."""
    stale_ttl: Duration = Field(default=0.0, ge=0)
    """How long after its TTL an entry may still be served while one caller refreshes it in the
    background (0: off, a miss loads synchronously) (live)."""
    lock: bool = False
    """Cross-process single flight: the loading process holds a short Redis lock; others wait
    (bounded by ``lock_wait``) for its value instead of loading too (live)."""
    lock_ttl: Seconds = 5.0
    """Expiry of that lock (a crashed loader frees it after this) (live)."""
    lock_wait: Seconds = 2.0
    """Longest wait for another process's load; then this process loads itself (live)."""
    invalidate_retries: int = Field(default=5, ge=0, le=100)
    """Background retries of a delete that failed in :meth:`Aside.invalidate` (live)."""
    invalidate_backoff: Seconds = 0.1
    """First pause between those retries, doubling each time (live)."""


class LocalCacheConfig(Model):
    """Client-side caching (server-assisted, ``CLIENT TRACKING``). Off while ``prefixes`` is empty.

    Not live: read when the cache is created (the tracking connection subscribes to these
    prefixes)."""

    prefixes: list[str] = Field(default_factory=list)
    """Key prefixes (without the cache's key prefix) whose GETs are served from process memory."""
    max_entries: int = Field(default=10_000, ge=1)
    """Bound of the in-process cache (least recently used entries are evicted)."""
    max_age: Seconds = 60.0
    """Longest an entry is served without asking Redis again (a safety net; invalidations from
    the server normally remove it first)."""
    ping_interval: Seconds = 1.0
    """How often the invalidation connection is checked; a dead one empties the local cache."""

    @field_validator("prefixes")
    @classmethod
    def _distinct(cls, prefixes: list[str]) -> list[str]:
        """Redis refuses overlapping BCAST prefixes (one a prefix of another)."""
        unique = sorted(set(prefixes))
        for a, b in itertools.pairwise(unique):
            if b.startswith(a):
                raise ValueError(f"prefixes {a!r} and {b!r} overlap: keep only {a!r}")
        return unique


class TokenBucket(Model):
    """Token bucket: ``rate`` tokens per second refill a bucket of ``burst`` tokens; each call
    takes ``cost`` tokens (go-zero's ``TokenLimiter``)."""

    algorithm: Literal["token_bucket"] = "token_bucket"
    rate: float = Field(gt=0)
    """Tokens added per second."""
    burst: int = Field(ge=1)
    """Bucket capacity: the most calls admitted at once after a quiet period."""


class SlidingWindow(Model):
    """Sliding window log: at most ``limit`` calls in any ``window`` seconds (exact)."""

    algorithm: Literal["sliding_window"] = "sliding_window"
    limit: int = Field(ge=1)
    window: Seconds


LimitSpec = Annotated[TokenBucket | SlidingWindow, Field(discriminator="algorithm")]
"""One named limit in ``rateLimit.limits``."""


class RateLimitConfig(Model):
    """Rate limits. All fields live (read on every call)."""

    limits: dict[str, LimitSpec] = Field(default_factory=dict)
    """Named limits, used by ``cache.limiter("name")`` (live)."""
    fallback: Literal["local", "allow", "deny"] = "local"
    """What a limiter answers while Redis is unreachable: ``local`` applies the same limit in
    this process only, ``allow`` admits every call, ``deny`` refuses every call (live)."""
    local_max_keys: int = Field(default=10_000, ge=1)
    """Keys the local fallback limiter remembers (least recently used are dropped)."""


class OnceConfig(Model):
    """Idempotency keys. All fields live."""

    in_progress_ttl: Seconds = 30.0
    """How long an in-progress mark lives: a process that crashed while handling a message
    stops blocking its redelivery after this (live)."""
    done_ttl: Seconds = 86_400.0
    """How long a finished key (and its stored outcome) is remembered (live)."""
