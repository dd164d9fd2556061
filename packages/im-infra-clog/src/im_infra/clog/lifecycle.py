"""The ``close()`` protocol every im-infra object with resources follows.

Objects that hold connections, threads or leases have an idempotent ``close()`` and are
context managers; these mixins supply the context-manager half, so each class writes only
``close()`` (kept here, in the package every component depends on, rather than copied).

They also carry the one way for something tied to an object's life to end with it:
:func:`on_close` runs a callback when the object's ``close()`` returns (or raises), or when the
object is garbage collected without being closed, whichever comes first, once. A component's
live config subscription ends this way (``coord.LiveConfig.close_with``), so closing a cache,
a database provider, a producer or a consumer stops following its config at once, not whenever
the garbage collector gets to it (under PyPy or with a reference cycle, never).
"""

from __future__ import annotations

import functools
import threading
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, Self

__all__ = ["AsyncClosing", "Closing", "on_close"]

_hooks: dict[int, list[weakref.finalize[Any, Any]]] = {}
"""The pending :func:`on_close` callbacks of each live object (by ``id``; an entry is dropped when
its object closes or is collected, before the id can be reused)."""
_hooks_lock = threading.RLock()  # re-entrant: a GC finalizer (_forget) may run under it


def on_close(owner: object, callback: Callable[[], object]) -> None:
    """Call ``callback()`` once: when ``owner.close()`` returns or raises (awaited, for an
    :class:`AsyncClosing`), or when ``owner`` is garbage collected unclosed, whichever is first.

    ``owner`` is a :class:`Closing` or :class:`AsyncClosing` (TypeError otherwise: its
    ``close()`` would not run the callback). ``callback`` must not refer to ``owner`` (that
    would keep it alive). An exception it raises on ``close()`` propagates from ``close()``
    after the other callbacks ran."""
    if not isinstance(owner, Closing | AsyncClosing):
        raise TypeError(f"on_close needs a Closing or AsyncClosing object, not {type(owner)!r}")
    key = id(owner)
    finalizer = weakref.finalize(owner, callback)
    with _hooks_lock:
        pending = _hooks.get(key)
        if pending is None:
            pending = _hooks[key] = []
            weakref.finalize(owner, _forget, key)
        pending.append(finalizer)


def _forget(key: int) -> None:
    with _hooks_lock:
        _hooks.pop(key, None)


def _closed(owner: object) -> None:
    """Run ``owner``'s pending :func:`on_close` callbacks (after its ``close()``)."""
    if not _hooks:  # (nearly always: close() of an object nothing registered with)
        return
    with _hooks_lock:
        pending = _hooks.pop(id(owner), None)
    if pending:
        failed: BaseException | None = None
        for finalizer in pending:
            try:
                finalizer()  # (a dead finalizer, already run, does nothing)
            except BaseException as exc:  # every callback runs; the first error is raised
                failed = failed or exc
        if failed is not None:
            raise failed


class Closing:
    """Mixin: ``with obj:`` returns ``obj`` and calls ``obj.close()`` on the way out; the
    :func:`on_close` callbacks run when ``close()`` returns."""

    __slots__ = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        close = cls.__dict__.get("close")
        if close is not None and not getattr(close, "_runs_on_close", False):
            cls.close = _sync_close(close)  # type: ignore[method-assign]

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClosing:
    """Mixin: ``async with obj:`` returns ``obj`` and awaits ``obj.close()`` on the way out; the
    :func:`on_close` callbacks run when ``close()`` returns."""

    __slots__ = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        close = cls.__dict__.get("close")
        if close is not None and not getattr(close, "_runs_on_close", False):
            cls.close = _async_close(close)  # type: ignore[assignment]

    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _sync_close(close: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(close)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> None:
        try:
            close(self, *args, **kwargs)  # (close(timeout=...) of producers and consumers)
        finally:
            _closed(self)

    wrapper._runs_on_close = True  # type: ignore[attr-defined]
    return wrapper


def _async_close(close: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    @functools.wraps(close)
    async def wrapper(self: Any, *args: Any, **kwargs: Any) -> None:
        try:
            await close(self, *args, **kwargs)
        finally:
            _closed(self)

    wrapper._runs_on_close = True  # type: ignore[attr-defined]
    return wrapper
