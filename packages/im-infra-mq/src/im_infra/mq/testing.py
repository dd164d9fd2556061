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
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import closing
from typing import Any, Literal, TypeVar

from im_infra import clog
from im_infra.clog.lifecycle import AsyncClosing, Closing
from im_infra.coord.deprecation import deprecated_names

from ._internal.memory import BrokerState, partition_for
from ._internal.memory_consume import Call, ConsumerCore, Fetch, Flow, Pause, Step, advance
from ._internal.memory_produce import ProducerCore, Report, encode, timeout_error
from .batch import AsyncBatchCallback, BatchCallback
from .config import RetryTopicsConfig
from .errors import ConfigError, MQError
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
from .retry import RetryPolicy

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


_C = TypeVar("_C", bound=ConsumerCore)


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
        return self._member(
            MemoryConsumer, group_id, retry, auto_offset_reset, logger, retry_topics
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
        return self._member(
            AsyncMemoryConsumer, group_id, retry, auto_offset_reset, logger, retry_topics
        )

    def _member(
        self,
        kind: type[_C],
        group_id: str,
        retry: RetryPolicy | None,
        reset: Literal["earliest", "latest"],
        logger: clog.Logger | None,
        retry_topics: RetryTopicsConfig | None,
    ) -> _C:
        if not group_id:
            raise ConfigError("group_id must be a non-empty string")
        if reset not in ("earliest", "latest"):
            raise ConfigError(f"auto_offset_reset must be 'earliest' or 'latest', got {reset!r}")
        return kind(
            self._state,
            group_id,
            retry=retry,
            reset=reset,
            logger=logger,
            retry_topics=retry_topics,
        )

    def partition_for(self, topic: str, key: bytes | str) -> int:
        """The partition a message with ``key`` goes to in ``topic`` (an unknown topic counts
        with the default partition count)."""
        with self._state.cond:
            parts = self._state.logs.get(topic)
            count = self._state.default_partitions if parts is None else len(parts)
        return partition_for(encode("key", key), count, 0)

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
# The core (encoding, storing, the reports not run yet) is _internal/memory_produce.py; the
# drivers below only choose where a delivery report runs and how send_sync waits for it.


class MemoryProducer(Closing):
    """An in-memory :class:`~im_infra.mq.Producer`; get one from :meth:`MemoryBroker.producer`.

    Messages are stored at once; delivery callbacks run on the producer's own thread (as the
    real poller thread runs them) with the sender's trace id bound.
    """

    def __init__(self, state: BrokerState, *, logger: clog.Logger | None = None) -> None:
        self._core = ProducerCore(state, logger)
        self._reports: queue.Queue[Report | None] = queue.Queue()
        self._thread = threading.Thread(
            target=self._report_loop, name="im-infra-mq-memory-producer", daemon=True
        )
        self._thread.start()

    @property
    def closed(self) -> bool:
        return self._core.closed

    def send(self, msg: Message, callback: DeliveryCallback | None = None) -> None:
        """Store ``msg``; ``callback(None | error)`` runs on the producer's thread. Raises
        :class:`~im_infra.mq.ProducerClosedError` after :meth:`close`."""
        self._reports.put(self._core.accept(msg, callback))

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
            raise timeout_error(msg.topic, wait)
        if result[0] is not None:
            raise result[0]

    def flush(self, timeout: float | None = None) -> int:
        """Wait until every delivery report ran; return how many are still pending."""
        core = self._core
        with core.idle:
            core.idle.wait_for(lambda: core.pending == 0, timeout)
            return core.pending

    def close(self) -> None:
        """Flush and stop the report thread. Idempotent."""
        if not self._core.shut():
            return
        if self._thread is threading.current_thread():
            self._reports.put(None)  # closed from a callback: the thread ends after it
            return
        self.flush(30.0)
        self._reports.put(None)
        self._thread.join(5.0)

    def _report_loop(self) -> None:
        while (report := self._reports.get()) is not None:
            self._core.deliver(report)


class AsyncMemoryProducer(AsyncClosing):
    """An in-memory :class:`~im_infra.mq.AsyncProducer`; from
    :meth:`MemoryBroker.async_producer`. Delivery callbacks run on the event loop."""

    def __init__(self, state: BrokerState, *, logger: clog.Logger | None = None) -> None:
        self._core = ProducerCore(state, logger)

    @property
    def closed(self) -> bool:
        return self._core.closed

    async def send(self, msg: Message, callback: DeliveryCallback | None = None) -> None:
        """Store ``msg``; ``callback`` runs on this event loop with the delivery result."""
        report = self._core.accept(msg, callback)
        asyncio.get_running_loop().call_soon(self._core.deliver, report)

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
            raise timeout_error(msg.topic, wait) from exc
        if error is not None:
            raise error

    async def flush(self, timeout: float | None = None) -> int:
        """Wait until every delivery report ran; return how many are still pending."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while self._core.pending and (deadline is None or loop.time() < deadline):
            await asyncio.sleep(0)
        return self._core.pending

    async def close(self) -> None:
        """Flush and refuse further sends. Idempotent."""
        if self._core.shut():
            await self.flush(30.0)


# ---------------------------------------------------------------------------------- consuming
# The consume loops (group membership, retries, retry and dead-letter topics, batches, trace
# ids, commits) are flows in _internal/memory_consume.py; the drivers below take their steps.


class MemoryConsumer(ConsumerCore, Closing):
    """An in-memory :class:`~im_infra.mq.Consumer`; get one from :meth:`MemoryBroker.consumer`."""

    _loop_thread: threading.Thread | None = None

    def subscribe(self, topics: Sequence[str], callback: ConsumeCallback) -> None:
        """Join the group on ``topics`` and call ``callback(msg)`` per message until closed
        (blocking); the message's trace id is bound around each call."""
        self._drive(self._each_flow(topics), callback)

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
        self._drive(self._batch_flow(topics, max_messages, max_wait), callback)

    def _drive(self, flow: Flow, callback: Callable[[Any], object]) -> None:
        """Take ``flow``'s steps on this thread until it ends (the consumer closed)."""
        with closing(flow):
            step = advance(flow)  # joined the group
            self._loop_thread = threading.current_thread()
            while step is not None:
                try:
                    if isinstance(step, Call):
                        reply = callback(step.arg)
                    elif isinstance(step, Pause):
                        reply = self._closing.wait(step.seconds)
                    else:
                        reply = self._fetch(step.timeout)
                except Exception as exc:
                    step = advance(flow, error=exc)
                else:
                    step = advance(flow, reply)

    def close(self, timeout: float | None = None) -> None:
        """Finish the message in hand, commit it, leave the group. Safe from another thread
        and from the callback; idempotent."""
        self._stop()
        if self._loop_thread is not threading.current_thread():
            self._stopped.wait(30.0 if timeout is None else timeout)


class AsyncMemoryConsumer(ConsumerCore, AsyncClosing):
    """An in-memory :class:`~im_infra.mq.AsyncConsumer`; from
    :meth:`MemoryBroker.async_consumer`."""

    _task: asyncio.Task[Any] | None = None

    async def subscribe(self, topics: Sequence[str], callback: AsyncConsumeCallback) -> None:
        """Join the group on ``topics`` and await ``callback(msg)`` per message until closed;
        the message's trace id is bound around each call."""
        await self._drive(self._each_flow(topics), callback)

    async def subscribe_batch(
        self,
        topics: Sequence[str],
        callback: AsyncBatchCallback,
        *,
        max_messages: int = 100,
        max_wait: float = 0.5,
    ) -> None:
        """The asyncio form of :meth:`MemoryConsumer.subscribe_batch`."""
        await self._drive(self._batch_flow(topics, max_messages, max_wait), callback)

    async def messages(self, topics: Sequence[str]) -> AsyncIterator[Message]:
        """Iterate messages; a message is committed when the next one is requested. Leaving
        the loop leaves the last message uncommitted (it is delivered again)."""
        flow = self._iterate_flow(topics)
        with closing(flow):
            step = advance(flow)
            while step is not None:
                if type(step) is Call:
                    assert isinstance(step.arg, Message)
                    yield step.arg
                    step = advance(flow)
                else:
                    step = advance(flow, await self._wait(step))

    async def _drive(self, flow: Flow, callback: Callable[[Any], Any]) -> None:
        """Take ``flow``'s steps in this task until it ends (the consumer closed)."""
        with closing(flow):
            step = advance(flow)  # joined the group
            self._task = asyncio.current_task()
            while step is not None:
                error: Exception | None = None
                try:
                    reply = await (callback(step.arg) if type(step) is Call else self._wait(step))
                except Exception as exc:
                    reply, error = None, exc
                step = advance(flow, reply, error)

    async def _wait(self, step: Step) -> Message | bool | None:
        """A :class:`Fetch` (look, then sleep a little when there is nothing) or a
        :class:`Pause` (in short sleeps, to notice a close); the event loop never blocks."""
        loop = asyncio.get_running_loop()
        if type(step) is Fetch:
            msg = self._fetch(0)
            if msg is None and step.timeout > 0:
                await asyncio.sleep(min(_IDLE_POLL, step.timeout))
            return msg
        assert type(step) is Pause
        deadline = loop.time() + step.seconds
        while not self._closing.is_set():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            await asyncio.sleep(min(remaining, _IDLE_POLL))
        return True

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
