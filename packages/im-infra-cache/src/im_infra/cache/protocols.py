"""The interfaces business code types against: :class:`Cache` (blocking) and :class:`AsyncCache`.

Keys are always given without the key prefix (it is applied for you). Values: ``bytes``/``str``
stored as they are, ``int``/``float`` as decimal text, anything else through the cache's
serializer (JSON by default). Durations are seconds (``float``) or ``timedelta``.
Errors: every method raises a :class:`~im_infra.cache.CacheError` subclass.
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol, Self, runtime_checkable

if TYPE_CHECKING:
    from types import TracebackType

    from im_infra.cache.aside import Aside, AsyncAside
    from im_infra.cache.config import RedisConfig
    from im_infra.cache.features import SlidingWindow, TokenBucket
    from im_infra.cache.local import LocalCache
    from im_infra.cache.lock import AsyncLock, Lock
    from im_infra.cache.once import AsyncOnce, Once
    from im_infra.cache.pipeline import AsyncPipeline, Pipeline
    from im_infra.cache.ratelimit import AsyncLimiter, Limiter
    from im_infra.cache.script import Script
    from im_infra.cache.serializer import Serializer

__all__ = ["AsyncCache", "Cache"]

Seconds = float | timedelta
Bound = float | str


@runtime_checkable
class Cache(Protocol):
    """Blocking access to Redis (the seed's ``Cache`` interface and the rest of the command set)."""

    @property
    def key_prefix(self) -> str:
        """The prefix applied to every key."""
        ...

    @property
    def service(self) -> str:
        """The service this cache belongs to."""
        ...

    @property
    def config(self) -> RedisConfig:
        """The resolved configuration."""
        ...

    @property
    def serializer(self) -> Serializer:
        """The serializer of non-scalar values."""
        ...

    @property
    def redis(self) -> Any:
        """The underlying redis-py client: an escape hatch with NO key prefix and no error
        translation."""
        ...

    # strings
    def get(self, key: str) -> str | None:
        """The value as text; None when the key does not exist (seed: Get)."""
        ...

    def get_bytes(self, key: str) -> bytes | None:
        """The raw stored bytes; None on a miss."""
        ...

    def get_obj(self, key: str) -> Any:
        """The value decoded by the serializer; None on a miss."""
        ...

    def set(
        self,
        key: str,
        value: Any,
        expiration: Seconds | None = None,
        *,
        nx: bool = False,
        xx: bool = False,
    ) -> bool:
        """Store ``value``; expires after ``expiration`` (None/0: never) (seed: Set). With ``nx``
        only if absent, with ``xx`` only if present; False when that condition failed."""
        ...

    def setnx(self, key: str, value: Any, expiration: Seconds | None = None) -> bool:
        """Set if absent (SET NX); True when set (seed: SetNX; ``set_nx``, its former name,
        still works on the implementations with a DeprecationWarning until 0.2.0)."""
        ...

    def get_set(self, key: str, value: Any) -> str | None:
        """Set ``value`` and return the previous value (None if there was none)."""
        ...

    def delete(self, *keys: str) -> int:
        """Delete keys; how many existed (seed: Del)."""
        ...

    def exists(self, *keys: str) -> int:
        """How many of ``keys`` exist."""
        ...

    def incr(self, key: str, amount: int = 1) -> int:
        """Add ``amount`` to the integer at ``key`` (0 if missing); the new value."""
        ...

    def decr(self, key: str, amount: int = 1) -> int:
        """Subtract ``amount``; the new value."""
        ...

    def incr_float(self, key: str, amount: float) -> float:
        """Add a float; the new value."""
        ...

    def expire(self, key: str, ttl: Seconds) -> bool:
        """Set a time to live; False when the key does not exist."""
        ...

    def persist(self, key: str) -> bool:
        """Remove the time to live; False when there was none or no key."""
        ...

    def ttl(self, key: str) -> float:
        """Seconds left; -1.0 when the key has no expiry, -2.0 when it does not exist."""
        ...

    def mget(self, *keys: str) -> list[str | None]:
        """Values of ``keys`` as text (None for misses), in order."""
        ...

    def mset(self, mapping: Mapping[str, Any]) -> None:
        """Set several keys atomically."""
        ...

    def scan(
        self, cursor: int = 0, match: str = "*", count: int | None = None
    ) -> tuple[int, list[str]]:
        """One SCAN step over this cache's keys: (next cursor, unprefixed keys); 0 ends.

        Single and sentinel modes; in cluster mode it raises :class:`CacheError` (use
        :meth:`scan_iter`)."""
        ...

    def scan_iter(self, match: str = "*", count: int | None = None) -> Iterator[str]:
        """Every key matching ``match`` (glob, unprefixed); in cluster mode on each primary."""
        ...

    # hashes
    def hset(self, key: str, field: str, value: Any) -> int:
        """Set one field; 1 if it is new, 0 if it was updated."""
        ...

    def hmset(self, key: str, mapping: Mapping[str, Any]) -> int:
        """Set several fields (HSET); how many are new."""
        ...

    def hsetnx(self, key: str, field: str, value: Any) -> bool:
        """Set a field only if absent."""
        ...

    def hget(self, key: str, field: str) -> str | None:
        """A field as text; None when missing."""
        ...

    def hget_obj(self, key: str, field: str) -> Any:
        """A field decoded by the serializer; None when missing."""
        ...

    def hmget(self, key: str, *fields: str) -> list[str | None]:
        """Several fields as text, in order."""
        ...

    def hgetall(self, key: str) -> dict[str, str]:
        """Every field and value ({} when the key does not exist)."""
        ...

    def hdel(self, key: str, *fields: str) -> int:
        """Delete fields; how many existed."""
        ...

    def hexists(self, key: str, field: str) -> bool:
        """Whether the field exists."""
        ...

    def hlen(self, key: str) -> int:
        """Number of fields."""
        ...

    def hincrby(self, key: str, field: str, amount: int = 1) -> int:
        """Add to an integer field; the new value."""
        ...

    def hkeys(self, key: str) -> list[str]:
        """Field names."""
        ...

    def hvals(self, key: str) -> list[str]:
        """Field values as text."""
        ...

    # sets
    def sadd(self, key: str, *members: Any) -> int:
        """Add members; how many were new."""
        ...

    def srem(self, key: str, *members: Any) -> int:
        """Remove members; how many were there."""
        ...

    def smembers(self, key: str) -> builtins.set[str]:
        """All members."""
        ...

    def sismember(self, key: str, member: Any) -> bool:
        """Whether ``member`` is in the set."""
        ...

    def scard(self, key: str) -> int:
        """Number of members."""
        ...

    def spop(self, key: str) -> str | None:
        """Remove and return a random member (None when empty)."""
        ...

    # sorted sets
    def zadd(
        self,
        key: str,
        mapping: Mapping[str, float],
        *,
        nx: bool = False,
        xx: bool = False,
        gt: bool = False,
        lt: bool = False,
    ) -> int:
        """Add members with scores (``{member: score}``); how many were new."""
        ...

    def zrem(self, key: str, *members: Any) -> int:
        """Remove members; how many were there."""
        ...

    def zscore(self, key: str, member: Any) -> float | None:
        """A member's score; None when absent."""
        ...

    def zincrby(self, key: str, member: Any, amount: float = 1.0) -> float:
        """Add to a member's score; the new score."""
        ...

    def zcard(self, key: str) -> int:
        """Number of members."""
        ...

    def zcount(self, key: str, min: Bound = "-inf", max: Bound = "+inf") -> int:
        """Members with min <= score <= max (``"(5"`` excludes 5)."""
        ...

    def zrank(self, key: str, member: Any) -> int | None:
        """0-based rank by ascending score; None when absent."""
        ...

    def zrevrank(self, key: str, member: Any) -> int | None:
        """0-based rank by descending score; None when absent."""
        ...

    def zrange(
        self, key: str, start: int = 0, stop: int = -1, *, withscores: bool = False
    ) -> list[Any]:
        """Members by ascending score between ranks (inclusive); ``(member, score)`` pairs with
        ``withscores``."""
        ...

    def zrevrange(
        self, key: str, start: int = 0, stop: int = -1, *, withscores: bool = False
    ) -> list[Any]:
        """Members by descending score between ranks."""
        ...

    def zrange_by_score(
        self,
        key: str,
        min: Bound = "-inf",
        max: Bound = "+inf",
        *,
        withscores: bool = False,
        offset: int | None = None,
        count: int | None = None,
    ) -> list[Any]:
        """Members with min <= score <= max, ascending; paged with offset/count."""
        ...

    def zrevrange_by_score(
        self,
        key: str,
        max: Bound = "+inf",
        min: Bound = "-inf",
        *,
        withscores: bool = False,
        offset: int | None = None,
        count: int | None = None,
    ) -> list[Any]:
        """Members with max >= score >= min, descending."""
        ...

    def zremrange_by_rank(self, key: str, start: int, stop: int) -> int:
        """Remove members between ranks; how many."""
        ...

    def zremrange_by_score(self, key: str, min: Bound, max: Bound) -> int:
        """Remove members between scores; how many."""
        ...

    # lists
    def lpush(self, key: str, *values: Any) -> int:
        """Prepend values; the new length."""
        ...

    def rpush(self, key: str, *values: Any) -> int:
        """Append values; the new length."""
        ...

    def lpop(self, key: str) -> str | None:
        """Remove and return the first element (None when empty)."""
        ...

    def rpop(self, key: str) -> str | None:
        """Remove and return the last element (None when empty)."""
        ...

    def lrange(self, key: str, start: int = 0, stop: int = -1) -> list[str]:
        """Elements between indexes (inclusive; negative counts from the end)."""
        ...

    def ltrim(self, key: str, start: int, stop: int) -> None:
        """Keep only the elements between indexes."""
        ...

    def llen(self, key: str) -> int:
        """Length of the list."""
        ...

    def lindex(self, key: str, index: int) -> str | None:
        """Element at ``index``; None when out of range."""
        ...

    def lrem(self, key: str, count: int, value: Any) -> int:
        """Remove ``count`` occurrences of ``value`` (0: all; negative: from the tail)."""
        ...

    # scripts, pipelines, locks, bloom filters
    def register_script(self, lua: str) -> Script:
        """A Lua script run by SHA, reloaded transparently after NOSCRIPT."""
        ...

    def run_script(self, script: Script, keys: Iterable[str] = (), args: Iterable[Any] = ()) -> Any:
        """Run ``script`` with prefixed ``keys``."""
        ...

    def pipeline(self, transaction: bool = True) -> Pipeline:
        """A pipeline (MULTI/EXEC when ``transaction``)."""
        ...

    def lock(
        self,
        name: str,
        ttl: float = 30.0,
        *,
        timeout: float | None = None,
        token: str | None = None,
    ) -> Lock:
        """A distributed lock with an owner token."""
        ...

    def aside(
        self,
        *,
        ttl: float | None = None,
        not_found_ttl: float | None = None,
        stale_ttl: float | None = None,
        jitter: float | None = None,
        lock: bool | None = None,
        on_undeleted: Callable[[tuple[str, ...]], None] | None = None,
    ) -> Aside:
        """Cache-aside (get-or-load with single flight, invalidation); defaults from
        ``redis.yaml`` ``aside``."""
        ...

    def limiter(self, name: str, spec: TokenBucket | SlidingWindow | None = None) -> Limiter:
        """A rate limiter: ``spec``, else ``rateLimit.limits[name]`` from ``redis.yaml``."""
        ...

    def once(self, namespace: str) -> Once:
        """Idempotency keys under ``namespace``."""
        ...

    @property
    def local_cache(self) -> LocalCache | None:
        """The client-side cache (None unless ``localCache.prefixes`` is configured)."""
        ...

    def bf_reserve(self, key: str, error_rate: float = 0.01, capacity: int = 100) -> None:
        """Create a bloom filter."""
        ...

    def bf_add(self, key: str, item: Any) -> bool:
        """Add to a bloom filter; True when the item was not there."""
        ...

    def bf_madd(self, key: str, items: Iterable[Any]) -> list[bool]:
        """Add several items to a bloom filter."""
        ...

    def bf_exists(self, key: str, item: Any) -> bool:
        """Whether the item is probably in the filter."""
        ...

    def bf_mexists(self, key: str, items: Iterable[Any]) -> list[bool]:
        """:meth:`bf_exists` for several items."""
        ...

    def ping(self) -> bool:
        """PING the server."""
        ...

    def close(self) -> None:
        """Close the connections (idempotent)."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
        /,
    ) -> None: ...


# ---- GENERATED by scripts/gen-cache-protocols from Cache above: do not edit below this line ----


@runtime_checkable
class AsyncCache(Protocol):
    """asyncio access to Redis: the methods of :class:`Cache`, awaitable (generated from it).

    ``lock()``, ``pipeline()``, ``aside()``, ``limiter()``, ``once()`` and
    ``register_script()`` return their (asyncio) objects directly; ``scan_iter()`` is an
    async iterator."""

    @property
    def key_prefix(self) -> str:
        """The prefix applied to every key."""
        ...

    @property
    def service(self) -> str:
        """The service this cache belongs to."""
        ...

    @property
    def config(self) -> RedisConfig:
        """The resolved configuration."""
        ...

    @property
    def serializer(self) -> Serializer:
        """The serializer of non-scalar values."""
        ...

    @property
    def redis(self) -> Any:
        """The underlying redis-py client: an escape hatch with NO key prefix and no error
        translation."""
        ...

    async def get(self, key: str) -> str | None:
        """The value as text; None when the key does not exist (seed: Get)."""
        ...

    async def get_bytes(self, key: str) -> bytes | None:
        """The raw stored bytes; None on a miss."""
        ...

    async def get_obj(self, key: str) -> Any:
        """The value decoded by the serializer; None on a miss."""
        ...

    async def set(
        self,
        key: str,
        value: Any,
        expiration: Seconds | None = None,
        *,
        nx: bool = False,
        xx: bool = False,
    ) -> bool:
        """Store ``value``; expires after ``expiration`` (None/0: never) (seed: Set). With ``nx``
        only if absent, with ``xx`` only if present; False when that condition failed."""
        ...

    async def setnx(self, key: str, value: Any, expiration: Seconds | None = None) -> bool:
        """Set if absent (SET NX); True when set (seed: SetNX; ``set_nx``, its former name,
        still works on the implementations with a DeprecationWarning until 0.2.0)."""
        ...

    async def get_set(self, key: str, value: Any) -> str | None:
        """Set ``value`` and return the previous value (None if there was none)."""
        ...

    async def delete(self, *keys: str) -> int:
        """Delete keys; how many existed (seed: Del)."""
        ...

    async def exists(self, *keys: str) -> int:
        """How many of ``keys`` exist."""
        ...

    async def incr(self, key: str, amount: int = 1) -> int:
        """Add ``amount`` to the integer at ``key`` (0 if missing); the new value."""
        ...

    async def decr(self, key: str, amount: int = 1) -> int:
        """Subtract ``amount``; the new value."""
        ...

    async def incr_float(self, key: str, amount: float) -> float:
        """Add a float; the new value."""
        ...

    async def expire(self, key: str, ttl: Seconds) -> bool:
        """Set a time to live; False when the key does not exist."""
        ...

    async def persist(self, key: str) -> bool:
        """Remove the time to live; False when there was none or no key."""
        ...

    async def ttl(self, key: str) -> float:
        """Seconds left; -1.0 when the key has no expiry, -2.0 when it does not exist."""
        ...

    async def mget(self, *keys: str) -> list[str | None]:
        """Values of ``keys`` as text (None for misses), in order."""
        ...

    async def mset(self, mapping: Mapping[str, Any]) -> None:
        """Set several keys atomically."""
        ...

    async def scan(
        self, cursor: int = 0, match: str = "*", count: int | None = None
    ) -> tuple[int, list[str]]:
        """One SCAN step over this cache's keys: (next cursor, unprefixed keys); 0 ends.

        Single and sentinel modes; in cluster mode it raises :class:`CacheError` (use
        :meth:`scan_iter`)."""
        ...

    def scan_iter(self, match: str = "*", count: int | None = None) -> AsyncIterator[str]:
        """Every key matching ``match`` (glob, unprefixed); in cluster mode on each primary."""
        ...

    async def hset(self, key: str, field: str, value: Any) -> int:
        """Set one field; 1 if it is new, 0 if it was updated."""
        ...

    async def hmset(self, key: str, mapping: Mapping[str, Any]) -> int:
        """Set several fields (HSET); how many are new."""
        ...

    async def hsetnx(self, key: str, field: str, value: Any) -> bool:
        """Set a field only if absent."""
        ...

    async def hget(self, key: str, field: str) -> str | None:
        """A field as text; None when missing."""
        ...

    async def hget_obj(self, key: str, field: str) -> Any:
        """A field decoded by the serializer; None when missing."""
        ...

    async def hmget(self, key: str, *fields: str) -> list[str | None]:
        """Several fields as text, in order."""
        ...

    async def hgetall(self, key: str) -> dict[str, str]:
        """Every field and value ({} when the key does not exist)."""
        ...

    async def hdel(self, key: str, *fields: str) -> int:
        """Delete fields; how many existed."""
        ...

    async def hexists(self, key: str, field: str) -> bool:
        """Whether the field exists."""
        ...

    async def hlen(self, key: str) -> int:
        """Number of fields."""
        ...

    async def hincrby(self, key: str, field: str, amount: int = 1) -> int:
        """Add to an integer field; the new value."""
        ...

    async def hkeys(self, key: str) -> list[str]:
        """Field names."""
        ...

    async def hvals(self, key: str) -> list[str]:
        """Field values as text."""
        ...

    async def sadd(self, key: str, *members: Any) -> int:
        """Add members; how many were new."""
        ...

    async def srem(self, key: str, *members: Any) -> int:
        """Remove members; how many were there."""
        ...

    async def smembers(self, key: str) -> builtins.set[str]:
        """All members."""
        ...

    async def sismember(self, key: str, member: Any) -> bool:
        """Whether ``member`` is in the set."""
        ...

    async def scard(self, key: str) -> int:
        """Number of members."""
        ...

    async def spop(self, key: str) -> str | None:
        """Remove and return a random member (None when empty)."""
        ...

    async def zadd(
        self,
        key: str,
        mapping: Mapping[str, float],
        *,
        nx: bool = False,
        xx: bool = False,
        gt: bool = False,
        lt: bool = False,
    ) -> int:
        """Add members with scores (``{member: score}``); how many were new."""
        ...

    async def zrem(self, key: str, *members: Any) -> int:
        """Remove members; how many were there."""
        ...

    async def zscore(self, key: str, member: Any) -> float | None:
        """A member's score; None when absent."""
        ...

    async def zincrby(self, key: str, member: Any, amount: float = 1.0) -> float:
        """Add to a member's score; the new score."""
        ...

    async def zcard(self, key: str) -> int:
        """Number of members."""
        ...

    async def zcount(self, key: str, min: Bound = "-inf", max: Bound = "+inf") -> int:
        """Members with min <= score <= max (``"(5"`` excludes 5)."""
        ...

    async def zrank(self, key: str, member: Any) -> int | None:
        """0-based rank by ascending score; None when absent."""
        ...

    async def zrevrank(self, key: str, member: Any) -> int | None:
        """0-based rank by descending score; None when absent."""
        ...

    async def zrange(
        self, key: str, start: int = 0, stop: int = -1, *, withscores: bool = False
    ) -> list[Any]:
        """Members by ascending score between ranks (inclusive); ``(member, score)`` pairs with
        ``withscores``."""
        ...

    async def zrevrange(
        self, key: str, start: int = 0, stop: int = -1, *, withscores: bool = False
    ) -> list[Any]:
        """Members by descending score between ranks."""
        ...

    async def zrange_by_score(
        self,
        key: str,
        min: Bound = "-inf",
        max: Bound = "+inf",
        *,
        withscores: bool = False,
        offset: int | None = None,
        count: int | None = None,
    ) -> list[Any]:
        """Members with min <= score <= max, ascending; paged with offset/count."""
        ...

    async def zrevrange_by_score(
        self,
        key: str,
        max: Bound = "+inf",
        min: Bound = "-inf",
        *,
        withscores: bool = False,
        offset: int | None = None,
        count: int | None = None,
    ) -> list[Any]:
        """Members with max >= score >= min, descending."""
        ...

    async def zremrange_by_rank(self, key: str, start: int, stop: int) -> int:
        """Remove members between ranks; how many."""
        ...

    async def zremrange_by_score(self, key: str, min: Bound, max: Bound) -> int:
        """Remove members between scores; how many."""
        ...

    async def lpush(self, key: str, *values: Any) -> int:
        """Prepend values; the new length."""
        ...

    async def rpush(self, key: str, *values: Any) -> int:
        """Append values; the new length."""
        ...

    async def lpop(self, key: str) -> str | None:
        """Remove and return the first element (None when empty)."""
        ...

    async def rpop(self, key: str) -> str | None:
        """Remove and return the last element (None when empty)."""
        ...

    async def lrange(self, key: str, start: int = 0, stop: int = -1) -> list[str]:
        """Elements between indexes (inclusive; negative counts from the end)."""
        ...

    async def ltrim(self, key: str, start: int, stop: int) -> None:
        """Keep only the elements between indexes."""
        ...

    async def llen(self, key: str) -> int:
        """Length of the list."""
        ...

    async def lindex(self, key: str, index: int) -> str | None:
        """Element at ``index``; None when out of range."""
        ...

    async def lrem(self, key: str, count: int, value: Any) -> int:
        """Remove ``count`` occurrences of ``value`` (0: all; negative: from the tail)."""
        ...

    def register_script(self, lua: str) -> Script:
        """A Lua script run by SHA, reloaded transparently after NOSCRIPT."""
        ...

    async def run_script(
        self, script: Script, keys: Iterable[str] = (), args: Iterable[Any] = ()
    ) -> Any:
        """Run ``script`` with prefixed ``keys``."""
        ...

    def pipeline(self, transaction: bool = True) -> AsyncPipeline:
        """A pipeline (MULTI/EXEC when ``transaction``)."""
        ...

    def lock(
        self,
        name: str,
        ttl: float = 30.0,
        *,
        timeout: float | None = None,
        token: str | None = None,
    ) -> AsyncLock:
        """A distributed lock with an owner token."""
        ...

    def aside(
        self,
        *,
        ttl: float | None = None,
        not_found_ttl: float | None = None,
        stale_ttl: float | None = None,
        jitter: float | None = None,
        lock: bool | None = None,
        on_undeleted: Callable[[tuple[str, ...]], None] | None = None,
    ) -> AsyncAside:
        """Cache-aside (get-or-load with single flight, invalidation); defaults from
        ``redis.yaml`` ``aside``."""
        ...

    def limiter(self, name: str, spec: TokenBucket | SlidingWindow | None = None) -> AsyncLimiter:
        """A rate limiter: ``spec``, else ``rateLimit.limits[name]`` from ``redis.yaml``."""
        ...

    def once(self, namespace: str) -> AsyncOnce:
        """Idempotency keys under ``namespace``."""
        ...

    @property
    def local_cache(self) -> LocalCache | None:
        """The client-side cache (None unless ``localCache.prefixes`` is configured)."""
        ...

    async def bf_reserve(self, key: str, error_rate: float = 0.01, capacity: int = 100) -> None:
        """Create a bloom filter."""
        ...

    async def bf_add(self, key: str, item: Any) -> bool:
        """Add to a bloom filter; True when the item was not there."""
        ...

    async def bf_madd(self, key: str, items: Iterable[Any]) -> list[bool]:
        """Add several items to a bloom filter."""
        ...

    async def bf_exists(self, key: str, item: Any) -> bool:
        """Whether the item is probably in the filter."""
        ...

    async def bf_mexists(self, key: str, items: Iterable[Any]) -> list[bool]:
        """:meth:`bf_exists` for several items."""
        ...

    async def ping(self) -> bool:
        """PING the server."""
        ...

    async def close(self) -> None:
        """Close the connections (idempotent)."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
        /,
    ) -> None: ...
