"""In-process single flight: concurrent calls for one key share one execution.

:class:`ThreadFlights` for threads (the blocking cache), :class:`TaskFlights` for asyncio tasks
(the asyncio cache). They are the two flavours' synchronisation primitives, nothing else: what
runs under them is one flow (see ``flow.py``).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import Any

__all__ = ["TaskFlights", "ThreadFlights"]


class ThreadFlights:
    """The first caller of a key runs ``fn``; callers arriving while it runs wait for its result
    (or its exception)."""

    __slots__ = ("_calls", "_lock")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[str, Future[Any]] = {}

    def run(self, key: str, fn: Callable[[], Any]) -> Any:
        with self._lock:
            call = self._calls.get(key)
            if call is None:
                call = self._calls[key] = Future()
                leader = True
            else:
                leader = False
        if not leader:
            return call.result()
        try:
            value = fn()
        except BaseException as exc:
            call.set_exception(exc)
            raise
        else:
            call.set_result(value)
            return value
        finally:
            with self._lock:
                del self._calls[key]

    def __len__(self) -> int:
        return len(self._calls)


class TaskFlights:
    """The first caller of a key starts ``make()`` as a task; every caller awaits that task,
    shielded: a cancelled caller does not cancel the shared work. One event loop only."""

    __slots__ = ("_calls",)

    def __init__(self) -> None:
        self._calls: dict[str, asyncio.Future[Any]] = {}

    async def run(self, key: str, make: Callable[[], Awaitable[Any]]) -> Any:
        task = self._calls.get(key)
        if task is None:
            task = asyncio.ensure_future(make())
            self._calls[key] = task
            task.add_done_callback(lambda done: self._finished(key, done))
        return await asyncio.shield(task)

    def _finished(self, key: str, task: asyncio.Future[Any]) -> None:
        if self._calls.get(key) is task:
            del self._calls[key]
        if not task.cancelled():
            task.exception()  # retrieved: no "never retrieved" warning when every caller left

    def __len__(self) -> int:
        return len(self._calls)
