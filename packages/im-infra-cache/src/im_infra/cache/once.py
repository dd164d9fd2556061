"""Idempotency keys: handle a message (a request) once, even when it is delivered again.

``begin`` marks a key *in progress* (``SET NX PX in_progress_ttl``, atomically with reading what
is there); ``finish`` replaces the mark by *done* plus the handler's outcome, kept ``done_ttl``;
``abandon`` removes the mark so a redelivery is handled again. A process that dies while holding
the mark blocks redeliveries until the mark expires (``in_progress_ttl``), no longer.

``run(key, handler)`` does the three: a key already done returns its stored outcome without
calling the handler (``duplicate=True``); a key in progress elsewhere raises
:class:`~im_infra.cache.OnceInProgress` (do not ack: the message comes back later); a handler
that raises abandons the mark and re-raises.

:class:`Once` (blocking) and :class:`AsyncOnce` (asyncio, handlers sync or async) share one
implementation (flows run by the cache's driver). Outcomes go through the cache's serializer.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, overload

from im_infra.cache._internal import metrics
from im_infra.cache._internal.flow import Call, Flow, script_flow, sha1
from im_infra.cache.errors import CacheError, OnceInProgress, SerializationError

if TYPE_CHECKING:
    from im_infra.cache._internal.base import SomeCache

__all__ = ["AsyncOnce", "Claim", "Once", "Outcome"]

T = TypeVar("T")

_PENDING, _DONE = b"p:", b"d:"

BEGIN_LUA = """
local v = redis.call('GET', KEYS[1])
if v then return v end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false
"""
FINISH_LUA = """
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, 2) == 'd:' then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""
ABANDON_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
BEGIN_SHA, FINISH_SHA, ABANDON_SHA = sha1(BEGIN_LUA), sha1(FINISH_LUA), sha1(ABANDON_LUA)

outcomes = metrics.meter.create_counter(
    "im_infra.cache.once.claims",
    unit="{claim}",
    description="Idempotency-key claims, by state (acquired, done, in_progress).",
)


@dataclass(frozen=True, slots=True)
class Claim:
    """What :meth:`Once.begin` found: ``acquired`` (this caller handles the key; pass the claim
    to ``finish`` or ``abandon``), ``done`` (handled before: ``outcome`` is the stored one) or
    ``in_progress`` (another caller holds the mark)."""

    key: str
    state: Literal["acquired", "done", "in_progress"]
    token: str
    outcome: Any = None


@dataclass(frozen=True, slots=True)
class Outcome(Generic[T]):
    """The result of :meth:`Once.run`: the handler's value, or the stored one of an earlier run
    (``duplicate=True``: the handler was not called)."""

    value: T
    duplicate: bool


class _OnceOps:
    """The idempotency-key operations; methods return the value (blocking) or an awaitable."""

    def __init__(self, cache: SomeCache, namespace: str) -> None:
        if not namespace or not isinstance(namespace, str):
            raise CacheError("once: namespace must be a non-empty string")
        self._cache = cache
        self.namespace = namespace
        self._prefix = f"{cache.key_prefix}once:{namespace}:"

    def _begin_flow(self, key: str) -> Flow[Claim]:
        cfg = self._cache.config.once
        token = uuid.uuid4().hex
        full = self._prefix + key
        mark = _PENDING + token.encode()
        found = yield from script_flow(
            BEGIN_LUA, BEGIN_SHA, [full], [mark, int(cfg.in_progress_ttl * 1000)]
        )
        if found is None:
            claim = Claim(key, "acquired", token)
        elif found[:2] == _DONE:
            claim = Claim(key, "done", token, self._loads(found[2:]))
        else:
            claim = Claim(key, "in_progress", token)
        outcomes.add(1, {"state": claim.state})
        return claim

    def _finish_flow(self, claim: Claim, outcome: Any) -> Flow[bool]:
        self._check(claim, "finish")
        cfg = self._cache.config.once
        try:
            payload = self._cache.serializer.dumps(outcome)
        except Exception as exc:
            raise SerializationError(
                f"once: cannot serialize a {type(outcome).__name__} outcome: {exc}"
            ) from exc
        done = yield from script_flow(
            FINISH_LUA,
            FINISH_SHA,
            [self._prefix + claim.key],
            [_DONE + payload, int(cfg.done_ttl * 1000)],
        )
        return bool(done)

    def _abandon_flow(self, claim: Claim) -> Flow[bool]:
        self._check(claim, "abandon")
        mark = _PENDING + claim.token.encode()
        gone = yield from script_flow(ABANDON_LUA, ABANDON_SHA, [self._prefix + claim.key], [mark])
        return bool(gone)

    def _run_flow(self, key: str, handler: Callable[[], Any]) -> Flow[Outcome[Any]]:
        claim = yield from self._begin_flow(key)
        if claim.state == "done":
            return Outcome(claim.outcome, duplicate=True)
        if claim.state == "in_progress":
            raise OnceInProgress(f"once {self.namespace!r}: key {key!r} is being handled elsewhere")
        try:
            value = yield Call(handler)
        except BaseException:
            yield from self._abandon_flow(claim)
            raise
        yield from self._finish_flow(claim, value)
        return Outcome(value, duplicate=False)

    def _loads(self, payload: bytes) -> Any:
        try:
            return self._cache.serializer.loads(payload)
        except Exception as exc:
            raise SerializationError(f"once: cannot deserialize the stored outcome: {exc}") from exc

    @staticmethod
    def _check(claim: Claim, what: str) -> None:
        if claim.state != "acquired":
            raise CacheError(f"once: cannot {what} a claim in state {claim.state!r}")

    # -- API ---
    def begin(self, key: str) -> Any:
        """Claim ``key``: a :class:`Claim` saying acquired, done (with the outcome) or
        in_progress."""
        return self._cache._drive(self._begin_flow(key))

    def finish(self, claim: Claim, outcome: Any = None) -> Any:
        """Record ``claim``'s key as done with ``outcome``; False when it was already done."""
        return self._cache._drive(self._finish_flow(claim, outcome))

    def abandon(self, claim: Claim) -> Any:
        """Drop ``claim``'s in-progress mark (the handling failed: let a redelivery retry);
        False when the mark was no longer this claim's (it expired)."""
        return self._cache._drive(self._abandon_flow(claim))

    def run(self, key: str, handler: Callable[[], Any]) -> Any:
        """Call ``handler()`` once per ``key``: an :class:`Outcome`. Raises OnceInProgress when
        another caller holds the key; a handler's exception abandons the mark and propagates."""
        return self._cache._drive(self._run_flow(key, handler))

    def forget(self, key: str) -> Any:
        """Delete ``key``'s mark or outcome (it will be handled again)."""
        return self._cache.delete(f"once:{self.namespace}:{key}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(namespace={self.namespace!r})"


class Once(_OnceOps):
    """Blocking idempotency keys: ``cache.once("im-logic.msg").run(msg_id, handle)``."""

    if TYPE_CHECKING:

        def begin(self, key: str) -> Claim: ...
        def finish(self, claim: Claim, outcome: Any = None) -> bool: ...
        def abandon(self, claim: Claim) -> bool: ...
        def run(self, key: str, handler: Callable[[], T]) -> Outcome[T]: ...
        def forget(self, key: str) -> int: ...


class AsyncOnce(_OnceOps):
    """asyncio idempotency keys; handlers may be sync or async."""

    if TYPE_CHECKING:

        async def begin(self, key: str) -> Claim: ...
        async def finish(self, claim: Claim, outcome: Any = None) -> bool: ...
        async def abandon(self, claim: Claim) -> bool: ...
        @overload
        async def run(self, key: str, handler: Callable[[], Awaitable[T]]) -> Outcome[T]: ...
        @overload
        async def run(self, key: str, handler: Callable[[], T]) -> Outcome[T]: ...
        async def run(self, key: str, handler: Callable[[], Any]) -> Outcome[Any]: ...
        async def forget(self, key: str) -> int: ...
