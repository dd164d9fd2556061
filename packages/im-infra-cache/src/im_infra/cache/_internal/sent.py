"""Whether a failed command was written to Redis: marked by the connection, not guessed.

A command that failed before its bytes were handed to the socket did not run and may be
retried even if it is not safe to repeat; one that failed after may have run. redis-py does not
say which, so the cache's connections and pools are redis-py's classes with the steps that run
*before* a command is written wrapped (:func:`tracked`): connecting (``_connect``: the socket
and TLS; ``on_connect_check_health``: the handshake) and the periodic health-check PING
(``_send_ping``); the blocking pool's own queue (``_internal/lifo.py``) marks its "no free
connection" timeout. An exception leaving one of them is marked; redis-py converts some of them
(a socket timeout into its ``TimeoutError``), raising the new error while handling the marked
one, so :func:`not_sent` also accepts a marked ``__context__``. Every other failure of a
command (writing it, reading its reply) is unmarked and counts as "may have run". None of the
wrapped steps runs per command on a connected connection (the hot path is unchanged).

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

CONNECTION_HOOKS = ("_connect", "on_connect_check_health", "_send_ping")
"""The connection steps that run before a command is written (only when connecting or when a
health check is due)."""


def not_sent(exc: BaseException) -> bool:
    """True when ``exc`` was raised before the command was written (it did not run): marked, or
    raised by redis-py while handling a marked error (its conversion of it)."""
    return (
        getattr(exc, _MARK, False)
        or getattr(exc.__context__, _MARK, False)
        or isinstance(exc, rex.MaxConnectionsError)
    )


def mark(exc: BaseException) -> None:
    """Mark ``exc`` as raised before the command was written."""
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
                mark(exc)
                raise

        return async_step

    @functools.wraps(step)
    def sync_step(*args: Any, **kwargs: Any) -> Any:
        try:
            return step(*args, **kwargs)
        except BaseException as exc:
            mark(exc)
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
