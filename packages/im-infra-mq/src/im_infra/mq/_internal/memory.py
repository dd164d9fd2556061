"""The state of an in-memory broker: partitioned logs, consumer groups, positions, commits.

Pure bookkeeping under one condition variable; the public producer and consumer in
``im_infra.mq.testing`` drive it. Groups follow Kafka's model: each partition of a subscribed
topic belongs to one member of the group; when members join or leave, partitions move and the
new owner starts from the group's committed offset (so messages handed out but not committed
are delivered again). Different groups each see every message.
"""

from __future__ import annotations

import threading
import time
import zlib
from dataclasses import dataclass, field
from typing import Literal

from im_infra.mq.dead_letter import retry_due_ms, retry_group
from im_infra.mq.errors import DeliveryError, TopicExistsError
from im_infra.mq.message import Message

TopicPartition = tuple[str, int]


def partition_for(key: bytes | None, partitions: int, counter: int) -> int:
    """librdkafka's default ``consistent_random`` partitioner: CRC-32 of the key modulo the
    partition count; a message without a key goes to a partition chosen by ``counter``."""
    if key is None:
        return counter % partitions
    return (zlib.crc32(key) & 0xFFFFFFFF) % partitions


@dataclass
class _Group:
    reset: Literal["earliest", "latest"]
    members: dict[str, tuple[str, ...]] = field(default_factory=dict)
    owner: dict[TopicPartition, str] = field(default_factory=dict)
    position: dict[TopicPartition, int] = field(default_factory=dict)
    committed: dict[TopicPartition, int] = field(default_factory=dict)
    #: Where the group started reading a partition it had no commit for.
    start: dict[TopicPartition, int] = field(default_factory=dict)


class BrokerState:
    """Topics, their partition logs and the consumer groups. Thread-safe."""

    def __init__(self, default_partitions: int, auto_create: bool) -> None:
        self.cond = threading.Condition()
        self.default_partitions = default_partitions
        self.auto_create = auto_create
        self.logs: dict[str, list[list[Message]]] = {}
        self.groups: dict[str, _Group] = {}
        self._unkeyed = 0
        self._member_seq = 0

    # ------------------------------------------------------------------ topics and producing
    def create_topic(self, name: str, partitions: int) -> None:
        with self.cond:
            if name in self.logs:
                if len(self.logs[name]) != partitions:
                    raise TopicExistsError(
                        f"topic {name!r} exists with {len(self.logs[name])} partitions, "
                        f"not {partitions}"
                    )
                return
            self.logs[name] = [[] for _ in range(partitions)]
            self._rebalance_all()

    def append(self, msg: Message, key: bytes | None, value: bytes | None) -> Message:
        """Store ``msg`` (key and value already encoded); returns the stored copy."""
        with self.cond:
            if not msg.topic:
                raise DeliveryError(
                    "delivery to topic '' failed: Broker: Invalid topic (TOPIC_EXCEPTION)",
                    code="TOPIC_EXCEPTION",
                )
            parts = self.logs.get(msg.topic)
            if parts is None:
                if not self.auto_create:
                    raise DeliveryError(
                        f"delivery to topic {msg.topic!r} failed: Broker: Unknown topic or "
                        "partition (UNKNOWN_TOPIC_OR_PART)",
                        code="UNKNOWN_TOPIC_OR_PART",
                    )
                parts = self.logs[msg.topic] = [[] for _ in range(self.default_partitions)]
                self._rebalance_all()
            if msg.partition is None:
                partition = partition_for(key, len(parts), self._unkeyed)
                if key is None:
                    self._unkeyed += 1
            else:
                partition = msg.partition
                if not 0 <= partition < len(parts):
                    raise DeliveryError(
                        f"delivery to topic {msg.topic!r} failed: Local: Unknown partition "
                        "(_UNKNOWN_PARTITION)",
                        code="_UNKNOWN_PARTITION",
                    )
            log = parts[partition]
            stored = Message(
                msg.topic,
                key,
                value,
                dict(msg.headers),
                partition,
                len(log),
                int(time.time() * 1000),
            )
            log.append(stored)
            self.cond.notify_all()
            return stored

    # ------------------------------------------------------------------ groups
    def join(
        self, group_id: str, topics: tuple[str, ...], reset: Literal["earliest", "latest"]
    ) -> str:
        with self.cond:
            self._member_seq += 1
            member = f"{group_id}-{self._member_seq:06d}"
            group = self.groups.setdefault(group_id, _Group(reset))
            for topic in topics:
                if topic not in self.logs and self.auto_create:
                    self.logs[topic] = [[] for _ in range(self.default_partitions)]
            group.members[member] = topics
            self._rebalance_all()
            return member

    def resubscribe(self, group_id: str, member: str, topics: tuple[str, ...]) -> None:
        """Change ``member``'s subscription to ``topics`` (partitions move accordingly)."""
        with self.cond:
            group = self.groups[group_id]
            if member in group.members:
                group.members[member] = topics
                self._rebalance_all()

    def ensure_topic(self, name: str, like: str) -> None:
        """Create ``name`` with the partition count of ``like`` (or the default) unless it
        exists: the consumer's retry and dead-letter topics, as the Kafka consumer's admin
        creates them."""
        with self.cond:
            if name not in self.logs:
                source = self.logs.get(like)
                count = self.default_partitions if source is None else len(source)
                self.logs[name] = [[] for _ in range(count)]
                self._rebalance_all()

    def leave(self, group_id: str, member: str) -> None:
        with self.cond:
            group = self.groups.get(group_id)
            if group is not None and group.members.pop(member, None) is not None:
                self._rebalance_all()

    def _rebalance_all(self) -> None:
        for group in self.groups.values():
            self._rebalance(group)
        self.cond.notify_all()

    def _rebalance(self, group: _Group) -> None:
        """Range-like assignment: each topic's partitions dealt round-robin over the members
        subscribed to it (sorted). A partition changing owner restarts from the commit."""
        owner: dict[TopicPartition, str] = {}
        for topic, parts in self.logs.items():
            members = sorted(m for m, topics in group.members.items() if topic in topics)
            for p in range(len(parts)) if members else ():
                owner[(topic, p)] = members[p % len(members)]
        for tp, member in owner.items():
            if group.owner.get(tp) != member:
                group.position[tp] = self._resume_at(group, tp)
        group.owner = owner

    def _resume_at(self, group: _Group, tp: TopicPartition) -> int:
        committed = group.committed.get(tp)
        if committed is not None:
            return committed
        if tp not in group.start:
            log = self.logs[tp[0]][tp[1]]
            group.start[tp] = 0 if group.reset == "earliest" else len(log)
        return group.start[tp]

    def fetch(self, group_id: str, member: str, timeout: float) -> Message | None:
        """The next message for ``member`` (its position advances), waiting up to ``timeout``.

        Other groups' retry-topic messages are passed over; a retry-topic partition whose next
        message is not due yet is skipped until it is (the Kafka consumer pauses it)."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                group = self.groups[group_id]
                now_ms = time.time() * 1000
                for tp, owner in group.owner.items():
                    if owner != member:
                        continue
                    log = self.logs[tp[0]][tp[1]]
                    pos = group.position.get(tp, 0)
                    while pos < len(log) and retry_group(log[pos]) not in (None, group_id):
                        pos += 1  # another group's retry: nothing to do with it
                    group.position[tp] = pos
                    if pos < len(log):
                        due = retry_due_ms(log[pos])
                        if due is not None and due > now_ms:
                            continue
                        group.position[tp] = pos + 1
                        return log[pos]
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self.cond.wait(remaining)

    def commit(self, group_id: str, member: str, msg: Message) -> bool:
        """Commit past ``msg`` if ``member`` still owns its partition (else its new owner
        delivers it again, as after a rebalance); True when committed."""
        assert msg.partition is not None and msg.offset is not None
        tp = (msg.topic, msg.partition)
        with self.cond:
            group = self.groups[group_id]
            if group.owner.get(tp) != member:
                return False
            if msg.offset + 1 > group.committed.get(tp, -1):
                group.committed[tp] = msg.offset + 1
            return True

    def wake(self) -> None:
        with self.cond:
            self.cond.notify_all()

    def redeliver_uncommitted(self, group_id: str | None) -> int:
        with self.cond:
            count = 0
            for gid, group in self.groups.items():
                if group_id is not None and gid != group_id:
                    continue
                for tp, pos in list(group.position.items()):
                    back = self._resume_at(group, tp)
                    if pos > back:
                        count += pos - back
                        group.position[tp] = back
            self.cond.notify_all()
            return count

    def seek(self, group_id: str, topic: str, partition: int, offset: int) -> None:
        with self.cond:
            group = self.groups.setdefault(group_id, _Group("latest"))
            tp = (topic, partition)
            group.committed[tp] = offset
            group.position[tp] = offset
            self.cond.notify_all()
