"""The thin confluent-kafka adapter of the consumer: the only module that calls
``confluent_kafka.Consumer`` (construct, subscribe with rebalance callbacks, poll / consume,
store_offsets, commit, pause / seek / resume, watermarks, close).

It translates confluent-kafka's types at the edge: partitions are ``(topic, partition)`` pairs,
librdkafka errors become an :class:`~im_infra.mq.ConsumerError` or a returned reason, and the
consumer core above it never sees a ``TopicPartition`` or a ``KafkaException``. Polled messages
stay confluent-kafka ``Message`` objects (converting them is the hot loop's business, see
:func:`to_message`), read through their accessor methods only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import confluent_kafka
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from im_infra import clog
from im_infra.mq._internal.client import AuthFailure, build_client
from im_infra.mq._internal.offsets import PartitionKey, Runs
from im_infra.mq.errors import ConsumerError
from im_infra.mq.message import Message

__all__ = ["ConsumedMessage", "KafkaConsumerClient", "message_error", "to_message"]

_NO_TIMESTAMP = confluent_kafka.TIMESTAMP_NOT_AVAILABLE
_IGNORED_COMMIT_ERRORS = {KafkaError._NO_OFFSET}

#: Called with the partitions assigned / revoked / lost in a rebalance (on the poll thread).
Rebalance = Callable[[list[PartitionKey]], None]

#: The slot behind ``Message.timestamp_ms`` (read and set by :class:`ConsumedMessage`).
_timestamp_slot: Any = Message.__dict__["timestamp_ms"]


def _fields(msg: Message) -> tuple[Any, ...]:
    return (
        msg.topic,
        msg.key,
        msg.value,
        msg.headers,
        msg.partition,
        msg.offset,
        msg.timestamp_ms,
    )


class ConsumedMessage(Message):
    """The :class:`Message` a consumer hands out: a plain one in every visible way, except that
    ``timestamp_ms`` is read from the confluent-kafka message on first access (confluent-kafka's
    ``timestamp()`` builds its tuple through ``Py_BuildValue``: ~1,000 CPU instructions per
    message, an eighth of the blocking consume path, for a field handlers seldom read).

    Equality (either way round) with a plain ``Message``, ``repr``, ``copy``, ``pickle``,
    ``dataclasses.replace`` / ``asdict`` / ``fields`` give what they give for a plain one with the
    same values; copies and pickles are plain ``Message`` objects.
    """

    __slots__ = ("_kmsg",)
    _kmsg: Any  # the confluent-kafka message (unset on one built by dataclasses.replace)

    @property
    def timestamp_ms(self) -> int | None:
        try:
            stored: int | None = _timestamp_slot.__get__(self, Message)
            return stored
        except AttributeError:  # not read yet
            ts_type, ts = self._kmsg.timestamp()
            value: int | None = None if ts_type == _NO_TIMESTAMP else ts
            _timestamp_slot.__set__(self, value)
            return value

    @timestamp_ms.setter
    def timestamp_ms(self, value: int | None) -> None:
        _timestamp_slot.__set__(self, value)

    def __eq__(self, other: object) -> bool:
        # Also called first for ``plain == consumed`` (the right operand's type is a subclass).
        if other.__class__ is ConsumedMessage or other.__class__ is Message:
            return _fields(self) == _fields(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # as Message's (a mutable dataclass)

    def __repr__(self) -> str:
        return repr(Message(*_fields(self)))

    def __reduce__(self) -> tuple[type[Message], tuple[Any, ...]]:
        return Message, _fields(self)  # copy and pickle: a plain Message


#: ``ConsumedMessage`` without running the dataclass ``__init__`` (see :func:`to_message`).
_new_message = object.__new__


def to_message(kmsg: Any) -> Message:
    """Convert a confluent-kafka message into a :class:`Message` (a :class:`ConsumedMessage`).

    One per consumed message, so it sets the slots directly: calling the dataclass with seven
    arguments costs ~1,100 more CPU instructions per message (a third of the conversion, measured
    with cachegrind). Every field but ``timestamp_ms`` (read on first access) is set here;
    ``test_to_message_sets_every_field`` fails when ``Message`` gains one this does not set.
    """
    msg: ConsumedMessage = _new_message(ConsumedMessage)
    raw_headers = kmsg.headers()
    msg.headers = {k: b"" if v is None else v for k, v in raw_headers} if raw_headers else {}
    msg.topic = kmsg.topic()
    msg.key = kmsg.key()
    msg.value = kmsg.value()
    msg.partition = kmsg.partition()
    msg.offset = kmsg.offset()
    msg._kmsg = kmsg
    return msg


def message_error(err: KafkaError, log: clog.Logger) -> None:
    """Handle a polled error event: end of partition is ignored, a fatal error raises
    :class:`ConsumerError`, anything else is logged (librdkafka recovers by itself)."""
    if err.code() == KafkaError._PARTITION_EOF:
        return
    if err.fatal():
        raise ConsumerError(f"fatal consumer error: {err.str()} ({err.name()})")
    log.warning("consumer error", cause=err.str(), code=err.name())


def _pairs(partitions: list[TopicPartition]) -> list[PartitionKey]:
    return [(p.topic, p.partition) for p in partitions]


class KafkaConsumerClient:
    """One librdkafka consumer handle (``enable.auto.offset.store`` is expected off: offsets are
    stored by :meth:`store` only)."""

    __slots__ = ("_rdk", "log", "properties")

    def __init__(
        self, properties: Mapping[str, Any], log: clog.Logger, auth: AuthFailure | None
    ) -> None:
        """Create the handle (:class:`ConfigError` when librdkafka rejects ``properties``)."""
        self.log = log
        self._rdk, self.properties = build_client(
            confluent_kafka.Consumer, "consumer", properties, log, auth=auth
        )

    def subscribe(
        self,
        topics: Sequence[str],
        on_assign: Rebalance,
        on_revoke: Rebalance,
        on_lost: Rebalance,
    ) -> None:
        """(Re)subscribe to ``topics``; the callbacks run inside :meth:`poll`."""
        try:
            self._rdk.subscribe(
                list(topics),
                on_assign=lambda _c, parts: on_assign(_pairs(parts)),
                on_revoke=lambda _c, parts: on_revoke(_pairs(parts)),
                on_lost=lambda _c, parts: on_lost(_pairs(parts)),
            )
        except KafkaException as exc:
            raise ConsumerError(f"consumer failed: {exc}") from exc

    def assign(self, partitions: Sequence[tuple[str, int, int]]) -> None:
        """Take ``(topic, partition, offset)`` manually (no group; benchmarks and tools)."""
        self._rdk.assign([TopicPartition(t, p, o) for t, p, o in partitions])

    def poll(self, timeout: float) -> Any | None:
        """One message or error event, or None after ``timeout`` seconds."""
        try:
            return self._rdk.poll(timeout)
        except KafkaException as exc:
            raise ConsumerError(f"consumer failed: {exc}") from exc

    def consume(self, count: int, timeout: float) -> list[Any]:
        """Up to ``count`` more messages, waiting up to ``timeout`` seconds for them."""
        try:
            return self._rdk.consume(count, timeout)
        except KafkaException as exc:
            raise ConsumerError(f"consumer failed: {exc}") from exc

    def store(self, done: Runs) -> list[tuple[str, int, int, int]]:
        """Store the offset after each partition's last finished message, one call per
        partition (so a partition revoked meanwhile fails alone; its new owner delivers its
        messages again). Returns ``(topic, partition, count, next offset)`` of those stored."""
        stored = []
        for (topic, partition), (count, last) in done.items():
            try:
                self._rdk.store_offsets(offsets=[TopicPartition(topic, partition, last + 1)])
            except KafkaException as exc:
                self.log.warning(
                    "could not store offset",
                    topic=topic,
                    partition=partition,
                    offset=last,
                    cause=str(exc),
                )
                continue
            stored.append((topic, partition, count, last + 1))
        return stored

    def commit(self, reason: str) -> None:
        """Commit the stored offsets now (synchronously); a failure is logged (the next commit
        or the group's next owner covers it), "nothing to commit" is not one."""
        try:
            self._rdk.commit(asynchronous=False)
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if isinstance(err, KafkaError) and err.code() in _IGNORED_COMMIT_ERRORS:
                return
            self.log.warning("offset commit failed", reason=reason, cause=str(exc))

    def pause_at(self, topic: str, partition: int, offset: int) -> None:
        """Pause a partition and seek it back to ``offset`` (fetched again once resumed).
        :class:`ConsumerError` when the seek fails: going on would store offsets past it."""
        where = TopicPartition(topic, partition, offset)
        self._rdk.pause([where])
        try:
            self._rdk.seek(where)
        except KafkaException as exc:
            raise ConsumerError(
                f"could not seek {topic}[{partition}] back to {offset}: {exc}"
            ) from exc

    def resume(self, topic: str, partition: int) -> None:
        """Resume a paused partition (a failure, e.g. revoked meanwhile, is logged)."""
        try:
            self._rdk.resume([TopicPartition(topic, partition)])
        except KafkaException as exc:
            self.log.warning(
                "could not resume a retry partition",
                topic=topic,
                partition=partition,
                cause=str(exc),
            )

    def high_watermark(self, topic: str, partition: int) -> int | None:
        """librdkafka's cached high watermark of a partition (no broker request). Poll thread
        only: confluent-kafka blocks this call while another thread polls."""
        try:
            _low, high = self._rdk.get_watermark_offsets(
                TopicPartition(topic, partition), cached=True
            )
        except (KafkaException, RuntimeError):
            return None
        return int(high) if high >= 0 else None

    def close(self) -> None:
        """Leave the group and release the handle (a failure is logged)."""
        try:
            self._rdk.close()
        except (KafkaException, RuntimeError) as exc:
            self.log.warning("consumer close failed", cause=str(exc))
