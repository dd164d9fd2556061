"""Ordered concurrency bookkeeping (pure: no I/O, no threads).

A polled batch is split into *chains*: the messages of one ordering key (the message key, or the
partition), in consumption order. Chains run in parallel, each one message at a time, so messages
with the same key are handled in order and different keys overlap. When the batch is over (or cut
short by close / cancellation), only each partition's *contiguous* run of finished messages from
the start of the batch may be stored: never an offset past a message that did not finish (the trap
of faststream#2618 and confluent-kafka-go#1179).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

__all__ = ["chains", "committable"]

PartitionKey = tuple[str, int]


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


def committable(
    positions: Sequence[tuple[PartitionKey, int]], finished: Sequence[bool]
) -> dict[PartitionKey, tuple[int, int]]:
    """Per partition, ``(count, last offset)`` of the finished messages that may be stored.

    ``positions[i]`` is message ``i``'s partition and offset, in consumption order (offsets rise
    within a partition); ``finished[i]`` whether it finished. A partition's run stops at its
    first unfinished message: later finished ones of that partition are not stored (they are
    delivered again, as duplicates, rather than the unfinished one being skipped).
    """
    if len(positions) != len(finished):
        raise ValueError(f"{len(positions)} positions but {len(finished)} finished flags")
    out: dict[PartitionKey, tuple[int, int]] = {}
    blocked: set[PartitionKey] = set()
    for (partition, offset), done in zip(positions, finished, strict=True):
        if partition in blocked:
            continue
        if not done:
            blocked.add(partition)
            continue
        count, last = out.get(partition, (0, -1))
        if offset <= last:
            raise ValueError(f"offsets of {partition} are not rising: {offset} after {last}")
        out[partition] = (count + 1, offset)
    return out
