"""Which commands are retried after a connection error or a timeout, and how that is enforced.

A command whose reply did not come back may have run: the request reached Redis and only the
reply was late or lost. Running it again is harmless for a read or for a write that sets an
absolute state with a reply that does not depend on the previous state (``SET k v``), but it runs
``INCR`` twice. So redis-py's retry loop (its ``Retry`` object, used for connecting, for every
command and for pipelines) is replaced by :class:`GatedRetry` / :class:`AsyncGatedRetry`, which
retry an error only when

* it was raised before the command was written (:func:`~im_infra.cache._internal.sent.not_sent`:
  connecting, the health-check PING, taking a connection from the pool), or
* the operation in progress is marked safe to repeat (:data:`SAFE`, set by the cache's drivers
  from :func:`is_safe` of the command, or of every command of a pipeline).

An unsafe command that failed after it may have been sent is reported as
``CacheOutcomeUnknown`` (see :func:`may_have_run`). docs/cache.md lists the commands retried.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine, Iterable
from contextvars import ContextVar
from typing import Any, TypeVar

import redis.asyncio.retry
import redis.retry
from redis import exceptions as rex

from im_infra.cache._internal.sent import not_sent

T = TypeVar("T")

SAFE: ContextVar[bool] = ContextVar("im_infra_cache_retry_safe", default=False)
"""True while an operation that is safe to repeat is in progress in this thread/task."""

READS = frozenset(
    {
        "BITCOUNT", "DBSIZE", "EXISTS", "GET", "GETBIT", "GETRANGE", "HEXISTS", "HGET",
        "HGETALL", "HKEYS", "HLEN", "HMGET", "HSTRLEN", "HVALS", "LINDEX", "LLEN", "LRANGE",
        "MGET", "PFCOUNT", "PING", "PTTL", "SCAN", "SCARD", "SCRIPT EXISTS", "SISMEMBER",
        "SMEMBERS", "SMISMEMBER", "STRLEN", "TTL", "TYPE", "ZCARD", "ZCOUNT", "ZMSCORE",
        "ZRANGE", "ZRANGEBYSCORE", "ZRANK", "ZREVRANGE", "ZREVRANGEBYSCORE", "ZREVRANK",
        "ZSCORE",
    }
)  # fmt: skip
"""Commands that only read."""

IDEMPOTENT_WRITES = frozenset({"MSET", "PEXPIRE", "EXPIRE", "LTRIM", "SCRIPT LOAD"})
"""Writes that leave the same state and give the same reply when run twice in a row (PEXPIRE /
EXPIRE without NX/XX/GT/LT: the second run restarts the same TTL a moment later)."""

_SET_UNSAFE_OPTIONS = frozenset({"NX", "GET"})
"""SET with NX answers "not set" the second time; with GET it returns the value just written."""
_EXPIRE_OPTIONS = frozenset({"NX", "XX", "GT", "LT"})


def _name(value: Any) -> str:
    return (value.decode() if isinstance(value, bytes) else str(value)).upper()


def _by_name() -> dict[object, bool]:
    """The verdict of every command whose name alone decides it (as str and bytes, any case the
    cache sends): the reads and the idempotent writes that take no options."""
    names = READS | (IDEMPOTENT_WRITES - {"PEXPIRE", "EXPIRE"})
    return {spelling: True for n in names for spelling in (n, n.lower(), n.encode())}


_BY_NAME = _by_name()


def is_safe(args: tuple[Any, ...]) -> bool:
    """True when the command ``args`` may be run again after an unanswered attempt.

    Called for every command the cache sends: a command whose name alone decides it costs one
    dict lookup (``_BY_NAME``); the rest (SET and EXPIRE options, unsafe commands) are read in
    full by :func:`_inspect`, but for the common ``SET key value`` (no options)."""
    if _BY_NAME.get(args[0]) or (len(args) == 3 and args[0] == "SET"):
        return True
    return _inspect(args)


def _inspect(args: tuple[Any, ...]) -> bool:
    name = _name(args[0])
    if name in READS:
        return True
    if name == "SET":
        return not any(_name(a) in _SET_UNSAFE_OPTIONS for a in args[3:] if type(a) is not int)
    if name in {"PEXPIRE", "EXPIRE"}:
        return not any(_name(a) in _EXPIRE_OPTIONS for a in args[3:])
    return name in IDEMPOTENT_WRITES


def all_safe(commands: Iterable[tuple[Any, ...]]) -> bool:
    """True when every command may be run again (a pipeline)."""
    return all(is_safe(args) for args in commands)


def may_have_run(exc: BaseException) -> bool:
    """True when ``exc`` (a redis-py error) leaves it unknown whether the command ran: the
    connection failed or timed out after the command may have been written."""
    return isinstance(exc, rex.ConnectionError | rex.TimeoutError) and not not_sent(exc)


def retryable(exc: Exception) -> bool:
    """The gate of both retry classes."""
    return SAFE.get() or not_sent(exc)


def _gate(is_retryable: Callable[[Exception], bool] | None) -> Callable[[Exception], bool]:
    if is_retryable is None:
        return retryable
    inner = is_retryable
    return lambda exc: inner(exc) and retryable(exc)


# redis-py's loops, called directly: the overrides below add one frame per command, no super()
_call_with_retry = redis.retry.Retry.call_with_retry
_acall_with_retry = redis.asyncio.retry.Retry.call_with_retry


class GatedRetry(redis.retry.Retry):
    """redis-py's Retry, repeating only what :func:`retryable` allows."""

    def call_with_retry(
        self,
        do: Callable[[], T],
        fail: Callable[..., Any],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> T:
        gate = retryable if is_retryable is None else _gate(is_retryable)
        return _call_with_retry(self, do, fail, gate, with_failure_count)

    def get_retries(self) -> int:
        """(RedisCluster asks this for its own loop: no retry of an unsafe command there.)"""
        return super().get_retries() if SAFE.get() else 0


class AsyncGatedRetry(redis.asyncio.retry.Retry):
    """redis.asyncio's Retry, repeating only what :func:`retryable` allows."""

    def call_with_retry(
        self,
        do: Callable[[], Awaitable[T]],
        fail: Callable[..., Any],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> Coroutine[Any, Any, T]:
        """(Not ``async``: returns redis.asyncio's own coroutine, one coroutine per command.)"""
        gate = retryable if is_retryable is None else _gate(is_retryable)
        return _acall_with_retry(self, do, fail, gate, with_failure_count)

    def get_retries(self) -> int:
        """(redis.asyncio's RedisCluster asks this for its own loop.)"""
        return super().get_retries() if SAFE.get() else 0
