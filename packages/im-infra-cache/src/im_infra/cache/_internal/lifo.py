"""The queue of the blocking cache's connection pool: ``queue.LifoQueue`` as redis-py's
``BlockingConnectionPool`` uses it (its ``queue_class`` argument), without the Python-level
locking.

``LifoQueue.get`` and ``put_nowait`` each run a ``threading.Condition`` (six Python-level calls
and a lock) on every command; here the items are a list (``append``/``pop`` are atomic) and
their count is a C-level ``queue.SimpleQueue`` of tokens, the one thing a caller waits on.
"""

from __future__ import annotations

from queue import Empty, Full, SimpleQueue
from typing import Any

from im_infra.cache._internal.sent import mark

__all__ = ["LifoQueue"]


class LifoQueue:
    """Last in, first out; ``get`` waits (up to ``timeout``) for an item, ``put_nowait`` raises
    ``queue.Full`` beyond ``maxsize`` items."""

    __slots__ = ("_tokens", "maxsize", "queue")

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self.queue: list[Any] = []
        """The items, newest last (BlockingConnectionPool reads it to list idle connections)."""
        self._tokens: SimpleQueue[None] = SimpleQueue()
        """One token per item: an item is appended before its token is put, and a token is
        taken before an item is popped, so a taken token always finds an item."""

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """The newest item; ``queue.Empty`` when none came within ``timeout`` seconds, marked
        as "command not sent" (the pool raises its "No connection available" from it)."""
        try:
            self._tokens.get(block, timeout)
        except Empty as exc:
            mark(exc)
            raise
        return self.queue.pop()

    def put_nowait(self, item: Any) -> None:
        if len(self.queue) >= self.maxsize:
            raise Full
        self.queue.append(item)
        self._tokens.put(None)

    def qsize(self) -> int:
        return len(self.queue)

    def empty(self) -> bool:
        return not self.queue
