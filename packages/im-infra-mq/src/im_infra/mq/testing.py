"""Testing helpers for services that use mq: an in-memory broker.

:class:`MemoryBroker` holds partitioned topics and consumer groups in memory. Its producers and
consumers satisfy :class:`~im_infra.mq.Producer` and :class:`~im_infra.mq.Consumer` and behave
like the Kafka-backed ones (the contract tests in ``tests-integration/mq`` run the same tests
against both): a key always maps to the same partition, by librdkafka's default rule (CRC-32 of
the key); headers travel with the message; the current clog trace id is added as the
``trace_id`` header and bound again around the consumer's callback; offsets are committed only
after the callback returned, and a :class:`~im_infra.mq.RetryPolicy` retries and dead-letters
as in production::

    from im_infra import clog, mq
    from im_infra.mq.testing import MemoryBroker

    broker = MemoryBroker(partitions=3)
    with broker.producer() as producer, clog.trace_context("t-1"):
        producer.send_sync(mq.Message("orders", key=b"user-1", value=b"created"))

    seen = []
    consumer = broker.consumer("billing")

    def handle(msg: mq.Message) -> None:
        seen.append((msg.value, clog.trace_id()))
        consumer.close()  # stop after one message

    consumer.subscribe(["orders"], handle)
    assert seen == [(b"created", "t-1")]

At-least-once on demand: :meth:`MemoryBroker.redeliver_uncommitted` puts every message that was
handed out but not committed back in line (what a crash or a rebalance does), and
:meth:`MemoryBroker.seek` moves a group's committed offset (replaying committed messages).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Sequence
from types import TracebackType
from typing import Literal, Self

from im_infra import clog

from ._internal.memory import BrokerState, partition_for
from ._internal.tracing import bound_trace, current_trace_headers
from .errors import ConfigError, ConsumerError, MQError, ProducerClosedError, SendTimeoutError
from .interfaces import ConsumeCallback, Consumer, DeliveryCallback, Producer
from .message import Message
from .retry import RetryPolicy, dead_letter_message

__all__ = ["MemoryBroker", "MemoryConsumer", "MemoryProducer"]


def _encode(what: str, data: bytes | str | None) -> bytes | None:
    if data is None or isinstance(data, bytes):
        return data
    if isinstance(data, str):
        return data.encode("utf-8")
    raise TypeError(f"message {what} must be bytes, str or None, got {type(data).__name__}")


class MemoryBroker:
    """Topics, partitions and consumer groups in memory. Thread-safe.

    ``partitions``: the partition count of topics created on first use (Kafka's
    ``num.partitions``); with ``auto_create_topics=False`` sending to an unknown topic fails as
    on a broker that does not auto-create (create them with :meth:`create_topic`).
    """

    def __init__(self, *, partitions: int = 1, auto_create_topics: bool = True) -> None:
        if not isinstance(partitions, int) or partitions < 1:
            raise ConfigError(f"partitions must be an int >= 1, got {partitions!r}")
        self._state = BrokerState(partitions, auto_create_topics)

    def create_topic(self, name: str, partitions: int = 1) -> None:
        """Create ``name``; an existing topic with the same partition count is fine."""
        if not name:
            raise ConfigError("topic name must be a non-empty string")
        if partitions < 1:
            raise ConfigError(f"partitions must be >= 1, got {partitions}")
        self._state.create_topic(name, partitions)

    def producer(self, *, logger: clog.Logger | None = None) -> MemoryProducer:
        """A producer on this broker (the in-memory ``mq.new_producer``)."""
        return MemoryProducer(self._state, logger=logger)

    def consumer(
        self,
        group_id: str,
        *,
        retry: RetryPolicy | None = None,
        auto_offset_reset: Literal["earliest", "latest"] = "latest",
        logger: clog.Logger | None = None,
    ) -> MemoryConsumer:
        """A member of consumer group ``group_id`` (the in-memory ``mq.new_consumer``).

        ``auto_offset_reset`` is where a group without a commit starts: "latest" (Kafka's and
        kafka.yaml's default: only messages sent after it joined) or "earliest".
        """
        if not group_id:
            raise ConfigError("group_id must be a non-empty string")
        if auto_offset_reset not in ("earliest", "latest"):
            raise ConfigError(
                f"auto_offset_reset must be 'earliest' or 'latest', got {auto_offset_reset!r}"
            )
        return MemoryConsumer(
            self._state, group_id, retry=retry, reset=auto_offset_reset, logger=logger
        )

    def partition_for(self, topic: str, key: bytes | str) -> int:
        """The partition a message with ``key`` goes to in ``topic`` (an unknown topic counts
        with the default partition count)."""
        with self._state.cond:
            parts = self._state.logs.get(topic)
            count = self._state.default_partitions if parts is None else len(parts)
        return partition_for(_encode("key", key), count, 0)

    def messages(self, topic: str) -> list[Message]:
        """Every message stored in ``topic``, by partition then offset (a copy)."""
        with self._state.cond:
            parts = self._state.logs.get(topic, [])
            return [m for log in parts for m in log]

    def committed(self, group_id: str, topic: str, partition: int = 0) -> int | None:
        """The group's committed offset (the next offset it will read) or None."""
        with self._state.cond:
            group = self._state.groups.get(group_id)
            return None if group is None else group.committed.get((topic, partition))

    def redeliver_uncommitted(self, group_id: str | None = None) -> int:
        """Put every message handed to a consumer of ``group_id`` (every group by default) but
        not committed back in line: it is delivered again, as after a crash or a rebalance.
        Returns how many messages will be delivered again."""
        return self._state.redeliver_uncommitted(group_id)

    def seek(self, group_id: str, topic: str, partition: int, offset: int) -> None:
        """Set the group's committed offset (and position) of a partition to ``offset``, as
        ``kafka-consumer-groups --reset-offsets`` does: messages from there on come again."""
        if offset < 0:
            raise ConfigError(f"offset must be >= 0, got {offset}")
        self._state.seek(group_id, topic, partition, offset)


_Report = tuple[DeliveryCallback | None, str | None, str, MQError | None]


class MemoryProducer:
    """An in-memory :class:`~im_infra.mq.Producer`; get one from :meth:`MemoryBroker.producer`.

    Messages are stored at once; delivery callbacks run on the producer's own thread (as the
    real poller thread runs them) with the sender's trace id bound.
    """

    def __init__(self, state: BrokerState, *, logger: clog.Logger | None = None) -> None:
        self._state = state
        self._log = (logger or clog.get_logger("mq")).named("producer")
        self._reports: queue.Queue[_Report | None] = queue.Queue()
        self._pending = 0
        self._idle = threading.Condition()
        self._closed = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(
            target=self._report_loop, name="im-infra-mq-memory-producer", daemon=True
        )
        self._thread.start()

    @property
    def closed(self) -> bool:
        return self._closed

    def send(self, msg: Message, callback: DeliveryCallback | None = None) -> None:
        """Store ``msg``; ``callback(None | error)`` runs on the producer's thread."""
        key, value = _encode("key", msg.key), _encode("value", msg.value)
        tid, trace = current_trace_headers()
        headers = {**trace, **msg.headers} if trace is not None else dict(msg.headers)
        out = Message(
            msg.topic,
            key,
            value,
            {k: _encode("header", v) or b"" for k, v in headers.items()},
            msg.partition,
        )
        with self._lock:
            if self._closed:
                raise ProducerClosedError("the producer is closed")
            with self._idle:
                self._pending += 1
        error: MQError | None = None
        try:
            self._state.append(out, key, value)
        except MQError as exc:
            error = exc
        self._reports.put((callback, tid, msg.topic, error))

    def send_sync(self, msg: Message, timeout: float | None = None) -> None:
        """Store ``msg`` and wait for its delivery report; raise its error."""
        if threading.current_thread() is self._thread:
            raise MQError("send_sync cannot be called from a delivery callback; use send")
        done = threading.Event()
        result: list[MQError | None] = []

        def record(err: MQError | None) -> None:
            result.append(err)
            done.set()

        self.send(msg, record)
        wait = 30.0 if timeout is None else timeout
        if not done.wait(wait):
            raise SendTimeoutError(
                f"no delivery report for a message to topic {msg.topic!r} within {wait:.1f}s",
                code="_TIMED_OUT",
                retriable=True,
            )
        if result[0] is not None:
            raise result[0]

    def flush(self, timeout: float | None = None) -> int:
        """Wait until every delivery report ran; return how many are still pending."""
        with self._idle:
            self._idle.wait_for(lambda: self._pending == 0, timeout)
            return self._pending

    def close(self) -> None:
        """Flush and stop the report thread. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self.flush(30.0)
        self._reports.put(None)
        if self._thread is not threading.current_thread():
            self._thread.join(5.0)

    def _report_loop(self) -> None:
        while True:
            item = self._reports.get()
            if item is None:
                return
            callback, tid, topic, error = item
            try:
                if callback is None:
                    if error is not None:
                        self._log.error("message delivery failed", topic=topic, cause=str(error))
                    continue
                token = None if tid is None else clog.set_trace_id(tid)
                try:
                    callback(error)
                except Exception:
                    self._log.exception("delivery callback raised", topic=topic)
                finally:
                    if token is not None:
                        clog.reset_trace_id(token)
            finally:
                with self._idle:
                    self._pending -= 1
                    self._idle.notify_all()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class MemoryConsumer:
    """An in-memory :class:`~im_infra.mq.Consumer`; get one from :meth:`MemoryBroker.consumer`."""

    def __init__(
        self,
        state: BrokerState,
        group_id: str,
        *,
        retry: RetryPolicy | None,
        reset: Literal["earliest", "latest"],
        logger: clog.Logger | None,
    ) -> None:
        self._state = state
        self._group_id = group_id
        self._retry = retry
        self._reset: Literal["earliest", "latest"] = reset
        self._log = (logger or clog.get_logger("mq")).named("consumer")
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._stopped = threading.Event()
        self._stopped.set()
        self._running = False
        self._loop_thread: threading.Thread | None = None
        self._dlq: MemoryProducer | None = None

    @property
    def group_id(self) -> str:
        return self._group_id

    @property
    def closed(self) -> bool:
        return self._closing.is_set()

    def subscribe(self, topics: Sequence[str], callback: ConsumeCallback) -> None:
        """Join the group on ``topics`` and call ``callback(msg)`` per message until closed."""
        if isinstance(topics, str):
            topics = [topics]
        if not topics:
            raise ConsumerError("subscribe needs at least one topic")
        with self._lock:
            if self._closing.is_set():
                raise ConsumerError("the consumer is closed")
            if self._running:
                raise ConsumerError("subscribe is already running on this consumer")
            self._running = True
            self._stopped.clear()
            self._loop_thread = threading.current_thread()
        member = self._state.join(self._group_id, tuple(topics), self._reset)
        try:
            while not self._closing.is_set():
                msg = self._state.fetch(self._group_id, member, 0.05)
                if msg is None:
                    continue
                handed = Message(
                    msg.topic,
                    msg.key,
                    msg.value,
                    dict(msg.headers),
                    msg.partition,
                    msg.offset,
                    msg.timestamp_ms,
                )
                with bound_trace(handed.headers):
                    finished = self._handle(handed, callback)
                if finished:
                    self._state.commit(self._group_id, member, msg)
        finally:
            self._state.leave(self._group_id, member)
            if self._dlq is not None:
                self._dlq.close()
            with self._lock:
                self._running = False
            self._stopped.set()

    def _handle(self, msg: Message, callback: ConsumeCallback) -> bool:
        """The callback with retries; False when stopping mid-message (not committed)."""
        retry = self._retry
        attempts = 1 if retry is None else retry.max_attempts
        attempt = 1
        while True:
            try:
                callback(msg)
                return True
            except Exception as exc:
                self._log.exception(
                    "consume callback failed",
                    topic=msg.topic,
                    partition=msg.partition,
                    offset=msg.offset,
                    attempt=attempt,
                    max_attempts=attempts,
                )
                if retry is None:
                    return True
                if attempt >= attempts:
                    if retry.dead_letter:
                        self._dead_letter(msg, exc)
                    return True
                if self._closing.wait(retry.pause(attempt)):
                    return False
                attempt += 1

    def _dead_letter(self, msg: Message, exc: Exception) -> None:
        if self._dlq is None:
            self._dlq = MemoryProducer(self._state, logger=self._log)
        dead = dead_letter_message(msg, exc)
        self._dlq.send_sync(dead)
        self._log.warning(
            "message sent to the dead-letter topic",
            topic=msg.topic,
            partition=msg.partition,
            offset=msg.offset,
            dlq_topic=dead.topic,
        )

    def close(self, timeout: float | None = None) -> None:
        """Finish the message in hand, commit it, leave the group. Safe from another thread
        and from the callback; idempotent."""
        self._closing.set()
        self._state.wake()
        if self._loop_thread is not threading.current_thread():
            self._stopped.wait(30.0 if timeout is None else timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _conforms(p: MemoryProducer, c: MemoryConsumer) -> tuple[Producer, Consumer]:
    """mypy proves here that the fakes satisfy mq's Protocols."""
    return p, c
