"""The asyncio cache's bound on commands in flight (``poolSize``), with a synchronous fast path.

``asyncio.Semaphore`` costs a coroutine and a generator per command even when a slot is free
(``await acquire()``, ``locked()``); :class:`Slots` takes a free slot with one plain call
(:meth:`Slots.take`) and awaits only when every slot is in use (:meth:`Slots.wait`). Waiters are
served first come, first served: a released slot goes straight to the oldest waiter.
"""

from __future__ import annotations

import asyncio
from collections import deque

__all__ = ["Slots"]


class Slots:
    """At most ``size`` holders at a time, for tasks of one event loop."""

    __slots__ = ("_free", "_waiters")

    def __init__(self, size: int) -> None:
        self._free = size
        self._waiters: deque[asyncio.Future[None]] = deque()

    def take(self) -> bool:
        """Take a free slot without waiting (True), or take nothing (False: call :meth:`wait`).

        A slot is free only while nobody waits (:meth:`release` hands it to the oldest waiter)."""
        if self._free:
            self._free -= 1
            return True
        return False

    async def wait(self) -> None:
        """Wait until a slot is handed over (after :meth:`take` returned False)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # handed a slot just as the task was cancelled: pass it on
            elif fut in self._waiters:
                self._waiters.remove(fut)
            raise

    async def acquire(self) -> None:
        if not self.take():
            await self.wait()

    def release(self) -> None:
        """Give a slot back: to the oldest waiter still waiting, else to the free ones."""
        waiters = self._waiters
        while waiters:
            fut = waiters.popleft()
            if not fut.done():  # (a cancelled waiter is done)
                fut.set_result(None)
                return
        self._free += 1

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *exc_info: object) -> None:
        self.release()
