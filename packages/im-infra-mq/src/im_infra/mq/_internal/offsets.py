"""The consumer's offset bookkeeping (pure: no I/O, no threads, no confluent-kafka calls
beyond reading a message's ``topic()`` / ``partition()`` / ``offset()``).

At-least-once means an offset is stored only once the message and every earlier message of its
partition in the batch finished. The consume loops collect what finished as *runs*: per
partition ``(topic, partition) -> [count, last offset]``, ``count`` finished messages ending at
``last`` (librdkafka hands out runs of one partition's messages, so a run is extended in place).
The offset stored for a run is the one *after* its last message. With ordered concurrency
the finished flags of a batch are not a prefix: :func:`committable` keeps, per partition, only
the contiguous run from the start of the batch (never past a message that did not finish: the
trap of faststream#2618 and confluent-kafka-go#1179).

What is committed on revoke and on close is what was stored so far: every finished run is stored
before the next poll (the only place a rebalance can revoke partitions) and at close, so a commit
never reaches past an unfinished message.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

__all__ = [
    "PartitionKey",
    "Runs",
    "add_finished",
    "add_run",
    "committable",
    "committable_runs",
    "runs_of",
]

PartitionKey = tuple[str, int]

#: Finished messages per partition: ``(topic, partition) -> [count, offset of the last one]``.
Runs = dict[PartitionKey, list[int]]


def add_run(done: Runs, topic: str, partition: int, count: int, last: int) -> None:
    """Add a run of ``count`` finished messages of one partition, ending at offset ``last``
    (nothing when ``count`` is 0)."""
    if count:
        state = done.get((topic, partition))
        if state is None:
            done[(topic, partition)] = [count, last]
        else:
            state[0] += count
            state[1] = last


def add_finished(done: Runs, kmsgs: Sequence[Any], start: int, end: int) -> None:
    """Add confluent-kafka messages ``kmsgs[start:end]`` (finished, in consumption order)."""
    topic, partition, count, last = "", -1, 0, -1  # the current run of one partition
    for i in range(start, end):
        kmsg = kmsgs[i]
        p = kmsg.partition()
        if p != partition or kmsg.topic() != topic:
            add_run(done, topic, partition, count, last)
            topic, partition, count = kmsg.topic(), p, 0
        count += 1
        last = kmsg.offset()
    add_run(done, topic, partition, count, last)


def runs_of(positions: Iterable[tuple[str, int, int]]) -> Runs:
    """The runs of messages given as ``(topic, partition, offset)``, all finished, in
    consumption order."""
    done: Runs = {}
    for topic, partition, offset in positions:
        add_run(done, topic, partition, 1, offset)
    return done


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


def committable_runs(
    positions: Sequence[tuple[PartitionKey, int]], finished: Sequence[bool]
) -> Runs:
    """:func:`committable` as runs (see :data:`Runs`)."""
    return {p: [count, last] for p, (count, last) in committable(positions, finished).items()}
