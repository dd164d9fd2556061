"""Ordered concurrency bookkeeping (pure: no I/O, no threads).

A polled batch is split into *chains*: the messages of one ordering key (the message key, or the
partition), in consumption order. Chains run in parallel, each one message at a time, so messages
with the same key are handled in order and different keys overlap. When the batch is over (or cut
short by close / cancellation), only each partition's *contiguous* run of finished messages from
the start of the batch may be stored (:func:`im_infra.mq._internal.offsets.committable`).
After a stop request, :class:`StartGate` lets a message start only if it closes such a gap, so a
graceful stop leaves nothing that ran to be delivered again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Sequence

__all__ = ["StartGate", "chains"]


def chains(keys: Sequence[Hashable]) -> list[list[int]]:
    """Indexes of ``keys`` grouped by equal key, in order within a group; groups are ordered by
    their first index (so the earliest messages start first)."""
    groups: dict[Hashable, list[int]] = {}
    for i, key in enumerate(keys):
        group = groups.get(key)
        if group is None:
            groups[key] = [i]
        else:
            group.append(i)
    return list(groups.values())


class StartGate:
    """Which messages of a batch may still start, for the runners of its chains (threads or
    tasks).

    Before a stop request every message may start. After it, only a message below the highest
    offset already started in its partition: finishing it closes a gap in the partition's
    finished run, so the commit reaches every message that ran and none is delivered again
    after a graceful stop, while nothing beyond what already ran starts. ``stopping`` is read
    under the gate's lock, so the decision and the record of a start are one step.
    """

    __slots__ = ("_lock", "_started", "_stopping")

    def __init__(self, stopping: Callable[[], bool]) -> None:
        self._lock = threading.Lock()
        self._started: dict[Hashable, int] = {}
        self._stopping = stopping

    def may_start(self, partition: Hashable, offset: int | None) -> bool:
        """Whether the message at ``offset`` of ``partition`` may start; if so it counts as
        started. (A consumed message always has an offset; None counts as -1.)"""
        if offset is None:
            offset = -1
        with self._lock:
            top = self._started.get(partition, -1)
            if offset <= top:
                return True
            if self._stopping():
                return False
            self._started[partition] = offset
            return True
