"""The in-process limiter a Redis rate limiter falls back to (``rateLimit.fallback: local``).

The same two algorithms as the Lua scripts in ``ratelimit.py``, on this process's monotonic
clock, for at most ``max_keys`` keys (least recently used forgotten). Thread-safe.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque
from typing import TYPE_CHECKING

from im_infra.cache.features import TokenBucket

if TYPE_CHECKING:
    from im_infra.cache.features import SlidingWindow

__all__ = ["LocalLimiter"]


class LocalLimiter:
    """Token buckets and sliding-window logs kept in memory, keyed like the Redis ones."""

    def __init__(self, max_keys: int) -> None:
        self._max_keys = max_keys
        self._lock = threading.Lock()
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()  # key -> [tokens, ts]
        self._windows: OrderedDict[str, deque[float]] = OrderedDict()
        self._now = time.monotonic

    def _touch(self, table: OrderedDict[str, object], key: str) -> None:
        table.move_to_end(key)
        while len(table) > self._max_keys:
            table.popitem(last=False)

    def allow(
        self, spec: TokenBucket | SlidingWindow, key: str, cost: int
    ) -> tuple[bool, int, float]:
        """(allowed, remaining, retry_after seconds) for ``cost`` calls of ``key``."""
        now = self._now()
        with self._lock:
            if isinstance(spec, TokenBucket):
                return self._bucket(spec, key, cost, now)
            return self._window(spec, key, cost, now)

    def _bucket(
        self, spec: TokenBucket, key: str, cost: int, now: float
    ) -> tuple[bool, int, float]:
        state = self._buckets.setdefault(f"{spec.rate}/{spec.burst}:{key}", [spec.burst, now])
        self._touch(self._buckets, f"{spec.rate}/{spec.burst}:{key}")  # type: ignore[arg-type]
        tokens = min(spec.burst, state[0] + max(0.0, now - state[1]) * spec.rate)
        state[1] = now
        if tokens >= cost:
            state[0] = tokens - cost
            return True, math.floor(state[0]), 0.0
        state[0] = tokens
        return False, math.floor(tokens), (cost - tokens) / spec.rate

    def _window(
        self, spec: SlidingWindow, key: str, cost: int, now: float
    ) -> tuple[bool, int, float]:
        name = f"{spec.limit}/{spec.window}:{key}"
        log = self._windows.setdefault(name, deque())
        self._touch(self._windows, name)  # type: ignore[arg-type]
        while log and log[0] <= now - spec.window:
            log.popleft()
        if len(log) + cost <= spec.limit:
            log.extend([now] * cost)
            return True, spec.limit - len(log), 0.0
        freeing = log[len(log) + cost - spec.limit - 1] if cost <= spec.limit else now
        return False, spec.limit - len(log), max(0.0, freeing + spec.window - now)
