"""UUID version 7 (RFC 9562): 48-bit Unix milliseconds, then a counter, then random bits.

Monotonic within a process (RFC 9562 §6.2, method 1, "fixed bit-length dedicated counter"):
each new millisecond seeds a 42-bit counter with random bits (its top bit 0, leaving at least
2**41 increments of room), later UUIDs of the same millisecond increment it, and 32 bits of
every UUID are fresh randomness. If the clock goes backwards the last millisecond is kept and
the counter keeps counting; if the counter overflows the timestamp is advanced by one. So every
UUID returned in a process is larger than the previous one (as ``UUID``, ``str`` and ``bytes``).
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable

from im_infra.uid._internal import forking

__all__ = ["uuid7"]

_NS_PER_MS = 1_000_000
_COUNTER_BITS = 42
_COUNTER_MAX = (1 << _COUNTER_BITS) - 1
_SEED_MASK = (1 << (_COUNTER_BITS - 1)) - 1  # a fresh counter starts with its top bit 0
_TS_MASK = (1 << 48) - 1
_VERSION_AND_VARIANT = (0x7 << 76) | (0b10 << 62)


class UUID7Source:
    """Thread-safe monotonic UUID v7 state; :func:`uuid7` uses one per process.

    ``clock`` returns int nanoseconds since the Unix epoch, ``randbytes(n)`` returns n random
    bytes; both are injectable for tests.
    """

    __slots__ = ("__weakref__", "_clock", "_counter", "_last_ms", "_lock", "_randbytes")

    def __init__(
        self,
        clock: Callable[[], int] = time.time_ns,
        randbytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self._clock = clock
        self._randbytes = randbytes
        self._lock = threading.Lock()
        self._last_ms = -1
        self._counter = 0
        forking.register(self)

    def next(self) -> uuid.UUID:
        """Return a UUID v7 larger than every UUID this source returned before."""
        with self._lock:
            ms = self._clock() // _NS_PER_MS
            if ms > self._last_ms:
                rand = int.from_bytes(self._randbytes(10))
                counter = (rand >> 32) & _SEED_MASK
            else:  # same millisecond, or the clock went back: keep counting on the last one
                ms = self._last_ms
                counter = self._counter + 1
                if counter > _COUNTER_MAX:
                    ms += 1
                    rand = int.from_bytes(self._randbytes(10))
                    counter = (rand >> 32) & _SEED_MASK
                else:
                    rand = int.from_bytes(self._randbytes(4))
            self._last_ms = ms
            self._counter = counter
        value = (
            ((ms & _TS_MASK) << 80)
            | ((counter >> 30) << 64)
            | ((counter & 0x3FFF_FFFF) << 32)
            | (rand & 0xFFFF_FFFF)
            | _VERSION_AND_VARIANT
        )
        return uuid.UUID(int=value)

    def _after_fork_in_child(self) -> None:
        # The lock may have been held by another parent thread at fork time. The state is kept:
        # the child stays monotonic, and its random bits differ from the parent's.
        self._lock = threading.Lock()


_default = UUID7Source()


def uuid7() -> uuid.UUID:
    """A new UUID version 7 (RFC 9562): time-ordered, and monotonic within this process.

    ``uuid7().version == 7``; the first 48 bits are the Unix time in milliseconds
    (``u.int >> 80``); 74 bits are a random-seeded counter plus random bits.
    """
    return _default.next()
