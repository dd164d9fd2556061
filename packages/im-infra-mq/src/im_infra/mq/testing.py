"""Testing helpers for services that use mq: an in-memory broker.

:class:`MemoryBroker` holds partitioned topics and consumer groups in memory. Its producers and
consumers satisfy :class:`~im_infra.mq.Producer` and :class:`~im_infra.mq.Consumer` and behave
like the Kafka-backed ones (the contract tests in ``packages/im-infra-mq/tests/integration`` run the
same tests
against both): a key always maps to the same partition, by librdkafka's default rule (CRC-32 of
the key); headers travel with the message; the current clog trace id is added as the
``trace_id`` header and bound again around the consumer's callback; offsets are committed only
after the callback returned, and a :class:`~im_infra.mq.RetryPolicy` retries and dead-letters
as in production, as do retry topics (``retry_topics=mq.RetryTopicsConfig(delaysMs=[...])``,
the ``consumer.retryTopics`` of kafka.yaml; :meth:`MemoryConsumer.set_retry_topics` plays a
live change)::

    from im_infra import clog, mq
    from im_infra.mq.testing import MemoryBroker

    broker = MemoryBroker(partitions=3)
    with broker.producer() as producer, clog.trace_context("t-1"):
        producer.send_sync(mq.Message("orders", key=b"user-1", value=b"created"))

    seen = []
    consumer = broker.consumer("billing", auto_offset_reset="earliest")

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

import asyncio
import queue
import threading
import time
from collections.abc import AsyncIterator, Generator, Sequence
from typing import Any, Literal

from im_infra import clog
from im_infra.clog.lifecycle import AsyncClosing, Closing
from im_infra.coord.deprecation import deprecated_names

from ._internal.batches import Failed, batch_flow, failures, log_failure
from ._internal.memory import BrokerState, partition_for
from ._internal.retry_topics import forwards, next_hop, subscription
from ._internal.tracing import bound_from, current_trace_headers
from ._internal.validate import check_headers, check_topic, check_topics, explain
from .batch import AsyncBatchCallback, BatchCallback, check_batch_limits
from .config import RetryTopicsConfig
from .errors import ConfigError, ConsumerError, MQError, ProducerClosedError, SendTimeoutError
from .message import Message
from .protocols import (
    AsyncConsumeCallback,
    AsyncConsumer,
    AsyncProducer,
    ConsumeCallback,
    Consumer,
    DeliveryCallback,
    Producer,
)
from .retry import RetryPolicy, retry_source

__all__ = [
    "AsyncMemoryConsumer",
    "AsyncMemoryProducer",
    "MemoryBroker",
    "MemoryConsumer",
    "MemoryProducer",
]

__getattr__ = deprecated_names(
    __name__,
    {"MemoryAsyncConsumer": "AsyncMemoryConsumer", "MemoryAsyncProducer": "AsyncMemoryProducer"},
    "0.2.0",
)


def _encode(what: str, data: bytes | str | None) -> bytes | None:
    if data is None or isinstance(data, bytes):
        return data
    if isinstance(data, str):
        return data.encode("utf-8")
    raise TypeError(f"message {what} must be bytes, str or None, got {type(data).__name__}")


def _check_group(group_id: str, auto_offset_reset: str) -> None:
    if not group_id:
        raise ConfigError("group_id must be a non-empty string")
    if auto_offset_reset not in ("earliest", "latest"):
        raise ConfigError(
            f"auto_offset_reset must be 'earliest' or 'latest', got {auto_offset_reset!r}"
        )


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
        retry_topics: RetryTopicsConfig | None = None,
    ) -> MemoryConsumer:
        """A member of consumer group ``group_id`` (the in-memory ``mq.new_consumer``).

        ``auto_offset_reset`` is where a group without a commit starts: "latest" (Kafka's and
        kafka.yaml's default: only messages sent after it joined) or "earliest".
        """
        _check_group(group_id, auto_offset_reset)
        return MemoryConsumer(
            self._state,
            group_id,
            retry=retry,
            reset=auto_offset_reset,
            logger=logger,
            retry_topics=retry_topics,
        )

    def async_producer(self, *, logger: clog.Logger | None = None) -> AsyncMemoryProducer:
        """An asyncio producer on this broker (the in-memory ``mq.new_async_producer``)."""
        return AsyncMemoryProducer(self._state, logger=logger)

    def async_consumer(
        self,
        group_id: str,
        *,
        retry: RetryPolicy | None = None,
        auto_offset_reset: Literal["earliest", "latest"] = "latest",
        logger: clog.Logger | None = None,
        retry_topics: RetryTopicsConfig | None = None,
    ) -> AsyncMemoryConsumer:
        """An asyncio member of ``group_id`` (the in-memory ``mq.new_async_consumer``)."""
        _check_group(group_id, auto_offset_reset)
        return AsyncMemoryConsumer(
            self._state,
            group_id,
            retry=retry,
            reset=auto_offset_reset,
            logger=logger,
            retry_topics=retry_topics,
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


# ---------------------------------------------------------------------------------- producing
_Report = tuple[DeliveryCallback | None, str | None, str, MQError | None]


def _outgoing(msg: Message) -> tuple[Message, str | None]:
    """``msg`` as stored (key, value and headers as bytes; the current trace id added as the
    real producer adds it, never replacing a header the caller set) and the trace id to bind
    around its delivery callback. Bad fields raise the real producer's InvalidArgumentError."""
    if msg.topic:  # an empty name fails at delivery, as on the broker
        check_topic(msg.topic, "message topic")
    elif not isinstance(msg.topic, str):
        raise explain(msg, TypeError("topic"))
    if msg.headers:
        check_headers(msg.headers)
    tid, trace = current_trace_headers()
    headers = {**trace, **msg.headers} if trace is not None else dict(msg.headers)
    try:
        out = Message(
            msg.topic,
            _encode("key", msg.key),
            _encode("value", msg.value),
            {k: _encode("header", v) or b"" for k, v in headers.items()},
            msg.partition,
        )
    except (TypeError, UnicodeEncodeError) as exc:
        raise explain(msg, exc) from exc
    if out.partition is not None and (
        type(out.partition) is bool or not isinstance(out.partition, int)
    ):
        raise explain(msg, TypeError("partition"))
    return out, tid


def _store(state: BrokerState, out: Message) -> MQError | None:
    """Append ``out`` (encoded by :func:`_outgoing`) to its topic; the delivery error, if any."""
    key = out.key if isinstance(out.key, bytes) else None
    value = out.value if isinstance(out.value, bytes) else None
    try:
        state.append(out, key, value)
    except MQError as exc:
        return exc
    return None


def _report(
    log: clog.Logger,
    callback: DeliveryCallback | None,
    tid: str | None,
    topic: str,
    error: MQError | None,
) -> None:
    """Run a delivery callback with the sender's trace id bound (as the real producers do)."""
    if callback is None:
        if error is not None:
            log.error("message delivery failed", topic=topic, cause=str(error))
        return
    token = None if tid is None else clog.set_trace_id(tid)
    try:
        callback(error)
    except Exception:
        log.exception("delivery callback raised", topic=topic)
    finally:
        if token is not None:
            clog.reset_trace_id(token)


def _timeout_error(topic: str, wait: float) -> SendTimeoutError:
    return SendTimeoutError(
        f"no delivery report for a message to topic {topic!r} within {wait:.1f}s",
        code="_TIMED_OUT",
        retriable=True,
    )


class MemoryProducer(Closing):
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
        self._thread = threading.Thread(
            target=self._report_loop, name="im-infra-mq-memory-producer", daemon=True
        )
        self._thread.start()

    @property
    def closed(self) -> bool:
        return self._closed

    def send(self, msg: Message, callback: DeliveryCallback | None = None) -> None:
        """Store ``msg``; ``callback(None | error)`` runs on the producer's thread. Raises
        :class:`~im_infra.mq.ProducerClosedError` after :meth:`close`."""
        out, tid = _outgoing(msg)
        with self._idle:
            if self._closed:
                raise ProducerClosedError("the producer is closed")
            self._pending += 1
        self._reports.put((callback, tid, msg.topic, _store(self._state, out)))

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
            raise _timeout_error(msg.topic, wait)
        if result[0] is not None:
            raise result[0]

    def flush(self, timeout: float | None = None) -> int:
        """Wait until every delivery report ran; return how many are still pending."""
        with self._idle:
            self._idle.wait_for(lambda: self._pending == 0, timeout)
            return self._pending

    def close(self) -> None:
        """Flush and stop the report thread. Idempotent."""
        with self._idle:
            if self._closed:
                return
            self._closed = True
        if self._thread is threading.current_thread():
            self._reports.put(None)  # closed from a callback: the thread ends after it
            return
        self.flush(30.0)
        self._reports.put(None)
        self._thread.join(5.0)

    def _report_loop(self) -> None:
        while True:
            item = self._reports.get()
            if item is None:
                return
            try:
                _report(self._log, *item)
            finally:
                with self._idle:
                    self._pending -= 1
                    self._idle.notify_all()


class AsyncMemoryProducer(AsyncClosing):
    """An in-memory :class:`~im_infra.mq.AsyncProducer`; from
    :meth:`MemoryBroker.async_producer`. Delivery callbacks run on the event loop."""

    def __init__(self, state: BrokerState, *, logger: clog.Logger | None = None) -> None:
        self._state = state
        self._log = (logger or clog.get_logger("mq")).named("producer")
        self._pending = 0
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    async def send(self, msg: Message, callback: DeliveryCallback | None = None) -> None:
        """Store ``msg``; ``callback`` runs on this event loop with the delivery result."""
        if self._closed:
            raise ProducerClosedError("the producer is closed")
        out, tid = _outgoing(msg)
        error = _store(self._state, out)
        self._pending += 1
        asyncio.get_running_loop().call_soon(self._deliver, (callback, tid, msg.topic, error))

    def _deliver(self, report: _Report) -> None:
        try:
            _report(self._log, *report)
        finally:
            self._pending -= 1

    async def send_sync(self, msg: Message, timeout: float | None = None) -> None:
        """Store ``msg`` and wait for its delivery report; raise its error."""
        future: asyncio.Future[MQError | None] = asyncio.get_running_loop().create_future()

        def record(err: MQError | None) -> None:
            if not future.done():  # not given up on (timed out, cancelled)
                future.set_result(err)

        await self.send(msg, record)
        wait = 30.0 if timeout is None else timeout
        try:
            error = await asyncio.wait_for(future, wait)
        except TimeoutError as exc:
            raise _timeout_error(msg.topic, wait) from exc
        if error is not None:
            raise error

    async def flush(self, timeout: float | None = None) -> int:
        """Wait until every delivery report ran; return how many are still pending."""
        deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
        while self._pending and (deadline is None or asyncio.get_running_loop().time() < deadline):
            await asyncio.sleep(0)
        return self._pending

    async def close(self) -> None:
        """Flush and refuse further sends. Idempotent."""
        if not self._closed:
            self._closed = True
            await self.flush(30.0)


# ---------------------------------------------------------------------------------- consuming
#: What a handling flow asks its driver for: call the callback (None; the driver sends back
#: the exception it raised, or None) or pause (seconds; the driver sends back True when the
#: consumer is closing meanwhile).
_Ask = float | None


def _handling(
    state: BrokerState,
    log: clog.Logger,
    group: str,
    retry: RetryPolicy | None,
    topics: RetryTopicsConfig,
    msg: Message,
) -> Generator[_Ask, Any, bool]:
    """One message's handling, without I/O (the blocking and asyncio consumers drive it):
    the callback with retries, the retry topics and the dead-letter topic, as the Kafka
    consumer does. Returns whether the message is finished (its offset may be committed)."""
    attempts = 1 if retry is None else retry.max_attempts
    attempt = 1
    while True:
        exc = yield None
        if exc is None:
            return True
        if retry is None and not forwards(msg, topics):
            return True  # the seed's behaviour: logged (by the driver) and skipped
        if attempt >= attempts:
            _forward(state, log, group, msg, exc, attempt, topics, retry)
            return True
        assert retry is not None  # attempts > 1
        if (yield retry.pause(attempt)):
            return False
        attempt += 1


def _forward(
    state: BrokerState,
    log: clog.Logger,
    group: str,
    msg: Message,
    exc: Exception,
    attempts: int,
    topics: RetryTopicsConfig,
    retry: RetryPolicy | None,
) -> None:
    """Store a message that failed its last attempt in its next retry topic or the
    dead-letter topic (created like the Kafka consumer's admin creates them)."""
    hop = next_hop(msg, exc, attempts, topics, retry is not None and retry.dead_letter, group)
    if hop is None:
        return
    target, dead = hop.message.topic, hop.delay_ms is None
    state.ensure_topic(target, retry_source(msg.topic) or msg.topic)
    error = _store(state, hop.message)
    if error is not None:
        log.error(
            f"could not write message to the {'dead-letter' if dead else 'retry'} topic; "
            "it is skipped",
            topic=msg.topic,
            dlq_topic=target,
            cause=str(error),
        )
    elif dead:
        log.warning(
            "message sent to the dead-letter topic",
            topic=msg.topic,
            partition=msg.partition,
            offset=msg.offset,
            dlq_topic=target,
        )
    else:
        log.info(
            "message sent to a retry topic",
            topic=msg.topic,
            partition=msg.partition,
            offset=msg.offset,
            retry_topic=target,
            delay_ms=hop.delay_ms,
        )


def _log_failure(log: clog.Logger, msg: Message, attempt: int, retry: RetryPolicy | None) -> None:
    """Called from the driver's ``except`` block, so the line carries the exception."""
    log.exception(
        "consume callback failed",
        topic=msg.topic,
        partition=msg.partition,
        offset=msg.offset,
        attempt=attempt,
        max_attempts=1 if retry is None else retry.max_attempts,
    )


def _handed(msg: Message) -> Message:
    """The copy of a stored message given to the callback (which may mutate it)."""
    return Message(
        msg.topic,
        msg.key,
        msg.value,
        dict(msg.headers),
        msg.partition,
        msg.offset,
        msg.timestamp_ms,
    )


class _Member:
    """What the blocking and asyncio consumers share: the group, the subscription checks."""

    def __init__(
        self,
        state: BrokerState,
        group_id: str,
        *,
        retry: RetryPolicy | None,
        reset: Literal["earliest", "latest"],
        logger: clog.Logger | None,
        retry_topics: RetryTopicsConfig | None = None,
    ) -> None:
        self._state = state
        self._group_id = group_id
        self._retry = retry
        self._topics = RetryTopicsConfig() if retry_topics is None else retry_topics
        self._sources: tuple[str, ...] = ()
        self._subscribed: tuple[str, ...] = ()  # sources + retry topics; only grows
        self._reset: Literal["earliest", "latest"] = reset
        self._log = (logger or clog.get_logger("mq")).named("consumer")
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._stopped = threading.Event()
        self._stopped.set()
        self._running = False

    @property
    def group_id(self) -> str:
        return self._group_id

    @property
    def closed(self) -> bool:
        return self._closing.is_set()

    @property
    def retry_topics(self) -> RetryTopicsConfig:
        """The non-blocking retry settings in force."""
        return self._topics

    def set_retry_topics(self, topics: RetryTopicsConfig) -> None:
        """Apply new retry-topic settings, as a live kafka.yaml change does to the Kafka
        consumer: later failures follow them; new retry topics are subscribed to at once."""
        self._topics = topics
        with self._lock:
            member = self._member
        if member is not None:
            self._grow(member)

    _member: str | None = None

    def _grow(self, member: str) -> None:
        """Subscribe ``member`` to the current retry topics too (creating them)."""
        with self._lock:
            wanted = subscription(self._sources, self._topics)
            new = tuple(t for t in wanted if t not in self._subscribed)
            if new:
                for name in new:
                    self._state.ensure_topic(name, retry_source(name) or name)
                self._subscribed += new
                self._state.resubscribe(self._group_id, member, self._subscribed)

    def _call_failed(self, msgs: list[Message], exc: Exception, attempt: int) -> Failed:
        """A batch callback raised ``exc`` (called from the ``except`` clause): which failed."""
        failed = failures(exc, len(msgs))
        attempts = 1 if self._retry is None else self._retry.max_attempts
        log_failure(self._log, msgs, failed, attempt, attempts)
        return failed

    def _finish_list(
        self,
        member: str,
        msgs: list[Message],
        failed: list[tuple[Message, Exception]],
        attempt: int,
    ) -> None:
        """A finished list: each message that failed every attempt goes on its way, then
        every offset is committed."""
        for msg, exc in failed:
            with bound_from(msg.headers):
                _forward(
                    self._state,
                    self._log,
                    self._group_id,
                    msg,
                    exc,
                    attempt,
                    self._topics,
                    self._retry,
                )
        for msg in msgs:
            self._state.commit(self._group_id, member, msg)

    def _join(self, topics: Sequence[str]) -> str:
        if isinstance(topics, str):
            topics = [topics]
        topics = check_topics(topics)
        if not topics:
            raise ConsumerError("subscribe needs at least one topic")
        with self._lock:
            if self._closing.is_set():
                raise ConsumerError("the consumer is closed")
            if self._running:
                raise ConsumerError("subscribe is already running on this consumer")
            self._running = True
            self._stopped.clear()
        self._sources = self._subscribed = tuple(topics)
        member = self._state.join(self._group_id, self._sources, self._reset)
        self._grow(member)
        with self._lock:
            self._member = member
        return member

    def _leave(self, member: str) -> None:
        self._state.leave(self._group_id, member)
        with self._lock:
            self._running = False
            self._member = None
        self._stopped.set()

    def _stop(self) -> None:
        self._closing.set()
        self._state.wake()


class MemoryConsumer(_Member, Closing):
    """An in-memory :class:`~im_infra.mq.Consumer`; get one from :meth:`MemoryBroker.consumer`."""

    _loop_thread: threading.Thread | None = None

    def subscribe(self, topics: Sequence[str], callback: ConsumeCallback) -> None:
        """Join the group on ``topics`` and call ``callback(msg)`` per message until closed
        (blocking); the message's trace id is bound around each call."""
        member = self._join(topics)
        self._loop_thread = threading.current_thread()
        try:
            while not self._closing.is_set():
                msg = self._state.fetch(self._group_id, member, 0.05)
                if msg is None:
                    continue
                handed = _handed(msg)
                with bound_from(handed.headers):
                    finished = self._drive(handed, callback)
                if finished:
                    self._state.commit(self._group_id, member, msg)
        finally:
            self._leave(member)

    def subscribe_batch(
        self,
        topics: Sequence[str],
        callback: BatchCallback,
        *,
        max_messages: int = 100,
        max_wait: float = 0.5,
    ) -> None:
        """Join the group on ``topics`` and call ``callback(messages)`` with lists of up to
        ``max_messages``, gathered for up to ``max_wait`` s, until closed (blocking); the
        Kafka consumer's batch semantics (:mod:`im_infra.mq.batch`)."""
        check_batch_limits(max_messages, max_wait)
        member = self._join(topics)
        self._loop_thread = threading.current_thread()
        try:
            while not self._closing.is_set():
                first = self._state.fetch(self._group_id, member, 0.05)
                if first is None:
                    continue
                msgs = [_handed(first)]
                deadline = time.monotonic() + max_wait
                while len(msgs) < max_messages:
                    remaining = deadline - time.monotonic()
                    more = self._state.fetch(self._group_id, member, max(remaining, 0))
                    if more is None:
                        break
                    msgs.append(_handed(more))
                flow = batch_flow(msgs, self._retry)
                ask, attempt = next(flow), 0
                try:
                    while True:
                        kind, arg = ask
                        if kind == "call":
                            attempt += 1
                            batch: list[Message] = arg  # type: ignore[assignment]
                            try:
                                if isinstance(result := callback(list(batch)), Exception):
                                    raise result
                                reply: Any = {}
                            except Exception as exc:
                                reply = self._call_failed(batch, exc, attempt)
                        else:
                            reply = self._closing.wait(arg)  # type: ignore[arg-type]
                        ask = flow.send(reply)
                except StopIteration as done:
                    finished, failed, attempt = done.value
                if finished:
                    self._finish_list(member, msgs, failed, attempt)
        finally:
            self._leave(member)

    def _drive(self, msg: Message, callback: ConsumeCallback) -> bool:
        flow = _handling(self._state, self._log, self._group_id, self._retry, self._topics, msg)
        ask, attempt = next(flow), 0
        try:
            while True:
                if ask is None:
                    attempt += 1
                    try:
                        if isinstance(result := callback(msg), Exception):
                            raise result  # the seed's Go form: returning an error is a failure
                        reply: Any = None
                    except Exception as exc:
                        _log_failure(self._log, msg, attempt, self._retry)
                        reply = exc
                else:
                    reply = self._closing.wait(ask)
                ask = flow.send(reply)
        except StopIteration as done:
            return bool(done.value)

    def close(self, timeout: float | None = None) -> None:
        """Finish the message in hand, commit it, leave the group. Safe from another thread
        and from the callback; idempotent."""
        self._stop()
        if self._loop_thread is not threading.current_thread():
            self._stopped.wait(30.0 if timeout is None else timeout)


class AsyncMemoryConsumer(_Member, AsyncClosing):
    """An in-memory :class:`~im_infra.mq.AsyncConsumer`; from
    :meth:`MemoryBroker.async_consumer`."""

    _task: asyncio.Task[Any] | None = None

    async def subscribe(self, topics: Sequence[str], callback: AsyncConsumeCallback) -> None:
        """Join the group on ``topics`` and await ``callback(msg)`` per message until closed;
        the message's trace id is bound around each call."""
        member = self._join(topics)
        self._task = asyncio.current_task()
        try:
            while not self._closing.is_set():
                msg = self._state.fetch(self._group_id, member, 0)
                if msg is None:
                    await asyncio.sleep(_IDLE_POLL)
                    continue
                handed = _handed(msg)
                with bound_from(handed.headers):
                    finished = await self._drive(handed, callback)
                if finished:
                    self._state.commit(self._group_id, member, msg)
        finally:
            self._leave(member)

    async def _drive(self, msg: Message, callback: AsyncConsumeCallback) -> bool:
        flow = _handling(self._state, self._log, self._group_id, self._retry, self._topics, msg)
        ask, attempt = next(flow), 0
        try:
            while True:
                if ask is None:
                    attempt += 1
                    try:
                        if isinstance(result := await callback(msg), Exception):
                            raise result  # the seed's Go form: returning an error is a failure
                        reply: Any = None
                    except Exception as exc:
                        _log_failure(self._log, msg, attempt, self._retry)
                        reply = exc
                else:
                    reply = await self._pause(ask)
                ask = flow.send(reply)
        except StopIteration as done:
            return bool(done.value)

    async def subscribe_batch(
        self,
        topics: Sequence[str],
        callback: AsyncBatchCallback,
        *,
        max_messages: int = 100,
        max_wait: float = 0.5,
    ) -> None:
        """The asyncio form of :meth:`MemoryConsumer.subscribe_batch`."""
        check_batch_limits(max_messages, max_wait)
        member = self._join(topics)
        self._task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        try:
            while not self._closing.is_set():
                first = self._state.fetch(self._group_id, member, 0)
                if first is None:
                    await asyncio.sleep(_IDLE_POLL)
                    continue
                msgs = [_handed(first)]
                deadline = loop.time() + max_wait
                while len(msgs) < max_messages:
                    more = self._state.fetch(self._group_id, member, 0)
                    if more is not None:
                        msgs.append(_handed(more))
                    elif loop.time() >= deadline:
                        break
                    else:
                        await asyncio.sleep(min(_IDLE_POLL, deadline - loop.time()))
                flow = batch_flow(msgs, self._retry)
                ask, attempt = next(flow), 0
                try:
                    while True:
                        kind, arg = ask
                        if kind == "call":
                            attempt += 1
                            batch: list[Message] = arg  # type: ignore[assignment]
                            try:
                                if isinstance(result := await callback(list(batch)), Exception):
                                    raise result
                                reply: Any = {}
                            except Exception as exc:
                                reply = self._call_failed(batch, exc, attempt)
                        else:
                            reply = await self._pause(arg)  # type: ignore[arg-type]
                        ask = flow.send(reply)
                except StopIteration as done:
                    finished, failed, attempt = done.value
                if finished:
                    self._finish_list(member, msgs, failed, attempt)
        finally:
            self._leave(member)

    async def _pause(self, seconds: float) -> bool:
        deadline = asyncio.get_running_loop().time() + seconds
        while not self._closing.is_set():
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return False
            await asyncio.sleep(min(remaining, _IDLE_POLL))
        return True

    async def messages(self, topics: Sequence[str]) -> AsyncIterator[Message]:
        """Iterate messages; a message is committed when the next one is requested. Leaving
        the loop leaves the last message uncommitted (it is delivered again)."""
        member = self._join(topics)
        try:
            while not self._closing.is_set():
                msg = self._state.fetch(self._group_id, member, 0)
                if msg is None:
                    await asyncio.sleep(_IDLE_POLL)
                    continue
                yield _handed(msg)
                self._state.commit(self._group_id, member, msg)
        finally:
            self._leave(member)

    async def close(self) -> None:
        """Finish the message in hand, commit it, leave the group. Idempotent; from the
        callback it only asks the loop to stop (it ends when the callback returns)."""
        self._stop()
        if self._task is not None and self._task is asyncio.current_task():
            return
        while not self._stopped.is_set():
            await asyncio.sleep(_IDLE_POLL)


#: How often an idle asyncio consumer looks for new messages (seconds).
_IDLE_POLL = 0.01


def _conforms(
    p: MemoryProducer, c: MemoryConsumer, ap: AsyncMemoryProducer, ac: AsyncMemoryConsumer
) -> tuple[Producer, Consumer, AsyncProducer, AsyncConsumer]:
    """mypy proves here that the fakes satisfy mq's Protocols."""
    return p, c, ap, ac
