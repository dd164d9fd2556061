"""Rate limiting in Redis: token bucket and sliding window, each one atomic Lua script.

:class:`Limiter` (blocking) and :class:`AsyncLimiter` (asyncio) share one implementation (a flow
run by the cache's driver). Scripts run by ``EVALSHA`` and are loaded again on ``NOSCRIPT``; time
is the Redis server's (``TIME``), so clients with skewed clocks share one limit.

When Redis is unreachable (connection refused or lost, timeout) the limiter answers from the
configured ``rateLimit.fallback``: ``local`` applies the same limit in this process only (N
processes then admit up to N times the limit), ``allow`` admits every call, ``deny`` refuses every
call. Such a result has ``fallback`` set. Other Redis errors (a wrong key type, say) raise.
"""

from __future__ import annotations

import itertools
import os
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from opentelemetry.metrics import CallbackOptions, Observation
from redis import exceptions as rex

from im_infra import clog
from im_infra.cache._internal import metrics
from im_infra.cache._internal.flow import Cmd, Flow, sha1
from im_infra.cache._internal.local_limit import LocalLimiter
from im_infra.cache.errors import CacheConfigError, CacheError
from im_infra.cache.features import SlidingWindow, TokenBucket

if TYPE_CHECKING:
    from im_infra.cache._internal.base import SomeCache

__all__ = ["AsyncLimiter", "Limiter", "RateLimitResult"]

_log = clog.get_logger("cache")

TOKEN_BUCKET_LUA = """
local rate, burst, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens, ts = tonumber(state[1]), tonumber(state[2])
if tokens == nil or ts == nil then tokens, ts = burst, now end
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate / 1000)
local allowed, retry = 0, 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
else
  retry = math.ceil((cost - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.6f', tokens), 'ts',
  string.format('%.3f', now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 1000)
return {allowed, math.floor(tokens), retry}
"""  # noqa: S105 - a Lua script, not a password
SLIDING_WINDOW_LUA = """
local limit, window, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
if count + cost <= limit then
  for i = 1, cost do redis.call('ZADD', KEYS[1], now, ARGV[4] .. i) end
  redis.call('PEXPIRE', KEYS[1], math.ceil(window / 1000))
  return {1, limit - count - cost, 0}
end
local retry = 0
if cost <= limit then
  local freeing = redis.call('ZRANGE', KEYS[1], count + cost - limit - 1, count + cost - limit - 1,
    'WITHSCORES')
  retry = math.ceil((tonumber(freeing[2]) + window - now) / 1000)
end
return {0, limit - count, retry}
"""
TOKEN_BUCKET_SHA, SLIDING_WINDOW_SHA = sha1(TOKEN_BUCKET_LUA), sha1(SLIDING_WINDOW_LUA)

_UNREACHABLE = (rex.ConnectionError, rex.TimeoutError)
_RECOVERABLE = (rex.NoScriptError, *_UNREACHABLE)

_limiters: weakref.WeakSet[_LimiterOps] = weakref.WeakSet()


def _value(counter: itertools.count[int]) -> int:
    """The next value of ``counter`` without advancing it (``next()`` is atomic in CPython:
    exact counts across threads without a lock)."""
    return int(counter.__reduce__()[1][0])


def _observe(_options: CallbackOptions) -> Iterable[Observation]:
    totals: dict[tuple[str, str], int] = {}
    for limiter in list(_limiters):
        counts = (_value(limiter._allowed), _value(limiter._refused))
        for allowed, count in zip(("true", "false"), counts, strict=True):
            totals[limiter.name, allowed] = totals.get((limiter.name, allowed), 0) + count
    for (name, allowed), count in totals.items():
        yield Observation(count, {"limiter": name, "allowed": allowed, "source": "redis"})


decisions = metrics.meter.create_observable_counter(
    "im_infra.cache.ratelimit.decisions",
    callbacks=[_observe],
    unit="{call}",
    description="Rate limiter answers Redis gave, by limiter name and allowed (true/false) "
    "(plain counts on the hot path, reported when a reader collects).",
)
fallbacks = metrics.meter.create_counter(
    "im_infra.cache.ratelimit.fallbacks",
    unit="{call}",
    description="Rate limiter answers given by the fallback while Redis was unreachable, by "
    "limiter name, allowed and source (local, allow, deny).",
)


@dataclass(slots=True)
class RateLimitResult:
    """One limiter answer."""

    allowed: bool
    remaining: int
    """Calls (tokens) still available now, after this one."""
    retry_after: float
    """Seconds until a call of the same cost can be admitted (0.0 when allowed)."""
    limit: int
    """The bucket size (token bucket) or the window's limit (sliding window)."""
    fallback: str | None = None
    """None when Redis answered; else the fallback that did (``local``, ``allow``, ``deny``)."""

    def __bool__(self) -> bool:
        return self.allowed


Spec = TokenBucket | SlidingWindow


class _LimiterOps:
    """The limiter's one operation; returns the value (blocking) or an awaitable (asyncio)."""

    def __init__(self, cache: SomeCache, name: str, spec: Spec | None = None) -> None:
        if not name or not isinstance(name, str):
            raise CacheConfigError("limiter: name must be a non-empty string")
        self._cache = cache
        self.name = name
        self._spec = spec
        self._spec_of()  # fails now (CacheConfigError) when the name is not configured
        self._prefix = f"{cache.key_prefix}ratelimit:{name}:"
        self._local: LocalLimiter | None = None
        self._planned: Spec | None = None
        self._plan_of: tuple[str, str, int, tuple[Any, ...]] = ("", "", 0, ())
        self._transform: Callable[[Any], RateLimitResult] = partial(self._result, 0)
        self._allowed = itertools.count()  # Redis answers (reported by _observe)
        self._refused = itertools.count()
        _limiters.add(self)

    def _spec_of(self) -> Spec:
        """This limiter's limit: the one given, else ``rateLimit.limits[name]`` (live)."""
        if self._spec is not None:
            return self._spec
        spec = self._cache.config.rate_limit.limits.get(self.name)
        if spec is None:
            raise CacheConfigError(
                f"limiter {self.name!r}: no such limit in redis.yaml rateLimit.limits "
                f"(configured: {sorted(self._cache.config.rate_limit.limits)})"
            )
        return spec

    def _plan(self, spec: Spec) -> tuple[str, str, int, tuple[Any, ...]]:
        """(lua, sha, size, leading ARGV) of ``spec``; the last one is kept (a spec changes
        only when the configuration does)."""
        if spec is self._planned:
            return self._plan_of
        if isinstance(spec, TokenBucket):
            plan = (TOKEN_BUCKET_LUA, TOKEN_BUCKET_SHA, spec.burst, (spec.rate, spec.burst))
        else:
            window_us = int(spec.window * 1_000_000)
            plan = (SLIDING_WINDOW_LUA, SLIDING_WINDOW_SHA, spec.limit, (spec.limit, window_us))
        self._planned, self._plan_of = spec, plan
        self._transform = partial(self._result, plan[2])
        return plan

    def _result(self, size: int, reply: Any) -> RateLimitResult:
        allowed, remaining, retry_ms = reply
        next(self._allowed if allowed else self._refused)
        if allowed:
            return RateLimitResult(True, remaining, 0.0, size)
        return RateLimitResult(False, remaining, retry_ms / 1000.0, size)

    def _recover(self, error: BaseException, context: tuple[Any, ...]) -> Flow[Any] | None:
        """The recovery of a failed EVALSHA: NOSCRIPT and unreachable have one, not the rest."""
        return self._recover_flow(error, *context) if isinstance(error, _RECOVERABLE) else None

    def _recover_flow(
        self, error: BaseException, spec: Spec, key: str, cost: int, command: tuple[Any, ...]
    ) -> Flow[RateLimitResult]:
        """After the EVALSHA failed with ``error`` (NOSCRIPT or unreachable)."""
        lua, _sha, size, _head = self._plan(spec)
        try:
            if not isinstance(error, rex.NoScriptError):
                raise error
            yield Cmd(("SCRIPT LOAD", lua))  # after SCRIPT FLUSH, a restart or a failover
            reply = yield Cmd(command)
        except _UNREACHABLE as exc:
            return self._fallback(spec, key, cost, exc)
        return self._result(size, reply)

    def _fallback(self, spec: Spec, key: str, cost: int, exc: BaseException) -> RateLimitResult:
        mode = self._cache.config.rate_limit.fallback
        _log.warning(
            "rate limiter: Redis unreachable, using the fallback",
            limiter=self.name,
            fallback=mode,
            error=type(exc).__name__,
        )
        if mode == "local":
            if self._local is None:
                self._local = LocalLimiter(self._cache.config.rate_limit.local_max_keys)
            allowed, remaining, retry = self._local.allow(spec, key, cost)
        else:
            allowed = mode == "allow"
            size = spec.burst if isinstance(spec, TokenBucket) else spec.limit
            remaining, retry = (size - cost, 0.0) if allowed else (0, 1.0)
        fallbacks.add(1, {"limiter": self.name, "allowed": str(allowed).lower(), "source": mode})
        limit = spec.burst if isinstance(spec, TokenBucket) else spec.limit
        return RateLimitResult(allowed, remaining, retry, limit, mode)

    # -- API ---
    def allow(self, key: str, cost: int = 1) -> Any:
        """Take ``cost`` calls from ``key``'s limit (``key``: a user id, an IP, ...); a
        :class:`RateLimitResult` (truthy when allowed)."""
        if cost < 1:
            raise CacheError(f"limiter {self.name!r}: cost must be >= 1, got {cost}")
        spec = self._spec if self._spec is not None else self._spec_of()
        lua, sha, size, head = self._plan(spec)
        if cost > size:
            raise CacheError(f"limiter {self.name!r}: cost {cost} exceeds the limit {size}")
        if lua is TOKEN_BUCKET_LUA:
            command: tuple[Any, ...] = ("EVALSHA", sha, 1, self._prefix + key, *head, cost)
        else:
            command = ("EVALSHA", sha, 1, self._prefix + key, *head, cost, os.urandom(8).hex())
        # one command on the fast path; the flow only when it failed
        transform = self._transform if size == self._plan_of[2] else partial(self._result, size)
        context = (spec, key, cost, command)
        return self._cache._attempt(command, transform, self._recover, context)

    def reset(self, key: str) -> Any:
        """Forget ``key``'s usage (its next call starts with a full limit)."""
        return self._cache.delete(f"ratelimit:{self.name}:{key}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class Limiter(_LimiterOps):
    """A blocking rate limiter: ``cache.limiter("send").allow(user_id)``."""

    if TYPE_CHECKING:

        def allow(self, key: str, cost: int = 1) -> RateLimitResult: ...
        def reset(self, key: str) -> int: ...


class AsyncLimiter(_LimiterOps):
    """An asyncio rate limiter: ``await cache.limiter("send").allow(user_id)``."""

    if TYPE_CHECKING:

        async def allow(self, key: str, cost: int = 1) -> RateLimitResult: ...
        async def reset(self, key: str) -> int: ...
