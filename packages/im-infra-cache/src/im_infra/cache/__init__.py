"""im_infra.cache: Redis access with a uniform interface (sync and asyncio), on redis-py.

    from im_infra import cache

    c = cache.new("im-logic")                 # configured from redis.yaml through coord
    c.set("user:1", {"name": "ann"}, 60)      # key "im-logic:user:1", JSON value, 60 s TTL
    c.get_obj("user:1")                       # {'name': 'ann'}
    with c.lock("job", ttl=10):
        ...

``new_async`` returns the asyncio twin with the same (awaitable) methods.
"""

from im_infra.cache.aside import Aside, AsyncAside, Invalidation
from im_infra.cache.client import AsyncRedisCache, RedisCache
from im_infra.cache.config import RedisConfig, RetryConfig, TLSConfig
from im_infra.cache.errors import (
    CacheArgumentError,
    CacheAuthError,
    CacheConfigError,
    CacheError,
    CacheOutcomeUnknown,
    CachePermissionError,
    CacheResponseError,
    CacheTimeout,
    CacheTLSError,
    CacheUnavailable,
    CacheWatchError,
    LockError,
    LockLost,
    LockTimeout,
    OnceInProgress,
    SerializationError,
)
from im_infra.cache.factory import load_config, new, new_async
from im_infra.cache.features import (
    AsideConfig,
    LocalCacheConfig,
    OnceConfig,
    RateLimitConfig,
    SlidingWindow,
    TokenBucket,
)
from im_infra.cache.lock import AsyncLock, Lock
from im_infra.cache.once import AsyncOnce, Claim, Once, Outcome
from im_infra.cache.pipeline import AsyncPipeline, Pipeline
from im_infra.cache.protocols import AsyncCache, Cache
from im_infra.cache.ratelimit import AsyncLimiter, Limiter, RateLimitResult
from im_infra.cache.script import Script
from im_infra.cache.serializer import JsonSerializer, PickleSerializer, Serializer
from im_infra.coord.deprecation import deprecated_names

__all__ = [
    "Aside",
    "AsideConfig",
    "AsyncAside",
    "AsyncCache",
    "AsyncLimiter",
    "AsyncLock",
    "AsyncOnce",
    "AsyncPipeline",
    "AsyncRedisCache",
    "Cache",
    "CacheArgumentError",
    "CacheAuthError",
    "CacheConfigError",
    "CacheError",
    "CacheOutcomeUnknown",
    "CachePermissionError",
    "CacheResponseError",
    "CacheTLSError",
    "CacheTimeout",
    "CacheUnavailable",
    "CacheWatchError",
    "Claim",
    "Invalidation",
    "JsonSerializer",
    "Limiter",
    "LocalCacheConfig",
    "Lock",
    "LockError",
    "LockLost",
    "LockTimeout",
    "Once",
    "OnceConfig",
    "OnceInProgress",
    "Outcome",
    "PickleSerializer",
    "Pipeline",
    "RateLimitConfig",
    "RateLimitResult",
    "RedisCache",
    "RedisConfig",
    "RetryConfig",
    "Script",
    "SerializationError",
    "Serializer",
    "SlidingWindow",
    "TLSConfig",
    "TokenBucket",
    "load_config",
    "new",
    "new_async",
]

__getattr__ = deprecated_names(
    __name__, {"LockAcquireTimeout": "LockTimeout", "LockNotOwned": "LockLost"}, "0.2.0"
)
