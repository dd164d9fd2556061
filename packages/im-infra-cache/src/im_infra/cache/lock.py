"""Distributed lock with an owner token (SET NX PX to take it, Lua compare-and-delete to release).

:class:`Lock` (blocking) and :class:`AsyncLock` (asyncio) share every operation: each is a flow
(see ``_internal/flow.py``) run by the owning cache's driver; they differ only in the context
manager protocol they implement.
"""

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from redis import exceptions as rex

from im_infra.cache._internal.codec import milliseconds
from im_infra.cache._internal.flow import Cmd, Flow, Sleep, script_flow, sha1
from im_infra.cache.errors import LockLost, LockTimeout

if TYPE_CHECKING:
    from im_infra.cache._internal.base import SomeCache

__all__ = ["AsyncLock", "Lock"]

RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
EXTEND_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
RELEASE_SHA, EXTEND_SHA = sha1(RELEASE_LUA), sha1(EXTEND_LUA)

_FIRST_POLL, _MAX_POLL = 0.005, 0.2
_UNANSWERED = (rex.ConnectionError, rex.TimeoutError)
_UNSET: Any = object()


class _LockOps:
    """The lock operations; methods return the value (blocking cache) or an awaitable (asyncio)."""

    def __init__(
        self,
        cache: SomeCache,
        name: str,
        ttl: float | timedelta = 30.0,
        *,
        timeout: float | None = None,
        token: str | None = None,
    ) -> None:
        self._cache = cache
        self.name = name
        """The lock's name (the key, without the cache's prefix)."""
        self._key = cache.key_prefix + name
        self._ttl_ms = milliseconds(ttl)
        self.timeout = timeout
        """Default acquire timeout in seconds (None: wait as long as it takes)."""
        self.token = token or uuid.uuid4().hex
        """The owner token stored in the lock key while this object holds it."""

    # -- flows ---
    def _acquire_flow(self, timeout: float | None, raise_on_timeout: bool) -> Flow[bool]:
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = _FIRST_POLL
        command = ("SET", self._key, self.token, "PX", self._ttl_ms, "NX")
        while True:
            try:
                if (yield Cmd(command)):
                    return True
            except _UNANSWERED as exc:
                # SET NX is not retried (a second run answers "not set" even when the first
                # took the lock): the key tells whether it ran. Past the deadline of acquire()
                # a slow or unreachable Redis is the lock's timeout; without one, its error.
                try:
                    if (yield from self._owned_flow()):
                        return True
                except _UNANSWERED:
                    pass
                if deadline is None or not raise_on_timeout:
                    raise exc
                if time.monotonic() >= deadline:
                    raise LockTimeout(
                        f"lock {self.name!r} not acquired within {timeout} s (Redis did not"
                        f" answer in time: {type(exc).__name__})"
                    ) from exc
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                if raise_on_timeout:
                    raise LockTimeout(f"lock {self.name!r} not acquired within {timeout} s")
                return False
            yield Sleep(pause if left is None else min(pause, left))
            pause = min(pause * 2, _MAX_POLL)

    def _owned_script_flow(self, lua: str, sha: str, what: str, *args: Any) -> Flow[None]:
        reply = yield from script_flow(lua, sha, [self._key], [self.token, *args])
        if not reply:
            raise LockLost(f"cannot {what} lock {self.name!r}: not held by this owner")

    def _get_flow(self) -> Flow[bytes | None]:
        return (yield Cmd(("GET", self._key)))  # type: ignore[no-any-return]

    def _owned_flow(self) -> Flow[bool]:
        return (yield from self._get_flow()) == self.token.encode()

    def _locked_flow(self) -> Flow[bool]:
        return (yield from self._get_flow()) is not None

    # -- API ---
    def try_acquire(self) -> Any:
        """Take the lock if it is free, without waiting. True when taken."""
        return self._cache._drive(self._acquire_flow(0.0, raise_on_timeout=False))

    def acquire(self, timeout: float | None = _UNSET) -> Any:
        """Wait until the lock is taken; LockTimeout after ``timeout`` seconds
        (default: the lock's ``timeout``; None waits as long as it takes)."""
        wait = self.timeout if timeout is _UNSET else timeout
        return self._cache._drive(self._acquire_flow(wait, raise_on_timeout=True))

    def extend(self, ttl: float | timedelta | None = None) -> Any:
        """Reset the lock's time to live to ``ttl`` (default: the lock's ttl). LockLost if
        this owner no longer holds it."""
        ms = self._ttl_ms if ttl is None else milliseconds(ttl)
        return self._cache._drive(self._owned_script_flow(EXTEND_LUA, EXTEND_SHA, "extend", ms))

    def release(self) -> Any:
        """Release the lock (compare-and-delete). LockLost if this owner does not hold it
        (it expired, or someone else took it since)."""
        return self._cache._drive(self._owned_script_flow(RELEASE_LUA, RELEASE_SHA, "release"))

    def owned(self) -> Any:
        """True when the lock key holds this owner's token."""
        return self._cache._drive(self._owned_flow())

    def locked(self) -> Any:
        """True when anyone holds the lock."""
        return self._cache._drive(self._locked_flow())

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class Lock(_LockOps):
    """A blocking distributed lock (``with cache.lock("name"):``). Get it from ``Cache.lock``."""

    if TYPE_CHECKING:  # the shared implementations, with this flavour's return types

        def try_acquire(self) -> bool: ...
        def acquire(self, timeout: float | None = ...) -> None: ...
        def extend(self, ttl: float | timedelta | None = None) -> None: ...
        def release(self) -> None: ...
        def owned(self) -> bool: ...
        def locked(self) -> bool: ...

    def __enter__(self) -> Lock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


class AsyncLock(_LockOps):
    """An asyncio distributed lock (``async with cache.lock("name"):``); methods are awaitable."""

    if TYPE_CHECKING:

        async def try_acquire(self) -> bool: ...
        async def acquire(self, timeout: float | None = ...) -> None: ...
        async def extend(self, ttl: float | timedelta | None = None) -> None: ...
        async def release(self) -> None: ...
        async def owned(self) -> bool: ...
        async def locked(self) -> bool: ...

    async def __aenter__(self) -> AsyncLock:
        await self.acquire()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.release()
