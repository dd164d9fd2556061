"""Whether a failed command was written to Redis: marked by the connection, not guessed.

A command that failed before its bytes were handed to the socket did not run and may be
retried even if it is not safe to repeat; one that failed after may have run. redis-py does not
say which, so the cache's connections and pools are redis-py's classes with the steps that run
*before* a command is written wrapped (:func:`tracked`): connecting (``_connect``, and
``connect_check_health``: the socket, TLS and the handshake), the periodic health-check PING
(``_send_ping``) and taking a connection from the pool (``get_connection``). An exception
leaving one of them is marked :func:`not_sent`; every other failure of a command (writing it,
reading its reply) is unmarked and counts as "may have run".

Unmarked is the safe side: a step redis-py adds or renames before the write makes its errors
"may have run" (an unsafe write is reported as outcome unknown rather than retried), never the
reverse. A hook that disappears from redis-py fails :func:`tracked` loudly (at import), so a
redis-py release cannot silently change the verdict. One wrapper serves both flavours: it
awaits the hooks that are coroutines (redis.asyncio), calls the others.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from redis import exceptions as rex

C = TypeVar("C", bound=type)

_MARK = "_im_infra_cache_not_sent"

CONNECTION_HOOKS = ("_connect", "connect_check_health", "_send_ping")
"""The connection steps that run before a command is written."""
POOL_HOOKS = ("get_connection",)
"""The pool step that runs before a command is written."""


def not_sent(exc: BaseException) -> bool:
    """True when ``exc`` was raised before the command was written (it did not run)."""
    return getattr(exc, _MARK, False) or isinstance(exc, rex.MaxConnectionsError)


def _mark(exc: BaseException) -> None:
    with contextlib.suppress(AttributeError):  # (no __dict__: stays unmarked, "may have run")
        setattr(exc, _MARK, True)


def _marking(step: Callable[..., Any]) -> Callable[..., Any]:
    """``step`` (a function of a redis-py class), marking what it raises as not sent."""
    if inspect.iscoroutinefunction(step):

        @functools.wraps(step)
        async def async_step(*args: Any, **kwargs: Any) -> Any:
            try:
                return await step(*args, **kwargs)
            except BaseException as exc:
                _mark(exc)
                raise

        return async_step

    @functools.wraps(step)
    def sync_step(*args: Any, **kwargs: Any) -> Any:
        try:
            return step(*args, **kwargs)
        except BaseException as exc:
            _mark(exc)
            raise

    return sync_step


_made: dict[type, type] = {}


def tracked(cls: C, hooks: tuple[str, ...]) -> C:
    """A subclass of the redis-py class ``cls`` whose ``hooks`` mark what they raise as not
    sent; RuntimeError when ``cls`` lacks one (a redis-py release this cache was not made for)."""
    made = _made.get(cls)
    if made is not None:
        return made  # type: ignore[return-value]
    missing = [name for name in hooks if not callable(getattr(cls, name, None))]
    if missing:
        raise RuntimeError(
            f"redis-py's {cls.__module__}.{cls.__qualname__} has no {', '.join(missing)}: "
            "im_infra.cache cannot tell whether a failed command was sent with this redis-py "
            "version (install the version its package metadata requires)"
        )
    namespace: dict[str, Any] = {name: _marking(getattr(cls, name)) for name in hooks}
    namespace["__module__"] = __name__
    made = type(f"Tracked{cls.__name__}", (cls,), namespace)
    _made[cls] = made
    return made  # type: ignore[return-value]
