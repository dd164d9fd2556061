"""The consumer core shared by :class:`~im_infra.mq.KafkaConsumer` and
:class:`~im_infra.mq.AsyncKafkaConsumer`: the poll loop, offset storing, rebalance handling and
retry-topic pausing, over the confluent-kafka adapter (:mod:`.kafka_consumer`).

At-least-once: librdkafka commits in the background every ``autoCommitIntervalMs``, but only
offsets the core *stored*, and it stores a message's offset only after the handler finished it:
per partition, once per polled batch and at least every 100 ms, always before the next poll
(bookkeeping in :mod:`.offsets`). Stored offsets are also committed when partitions are revoked and
on close. A crash therefore re-delivers the messages handled since the last commit (duplicates)
but never skips one.

The callback arrives wrapped (:meth:`.consumer_handling.Handling.wrap`: trace binding, retries,
forwarding); the core calls it and stores what finished. How a batch is handled is the caller's
choice of *runner*: per message on the poll thread (the blocking consumer), ordered concurrency
on worker threads, lists for a batch callback, or one hop per batch to another thread
(:data:`HandOver`, the asyncio consumer).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import contextvars
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from im_infra import clog
from im_infra.mq._internal.batches import batch_flow
from im_infra.mq._internal.client import AuthFailure
from im_infra.mq._internal.consumer_handling import Handler, Handling, Wrapped
from im_infra.mq._internal.kafka_consumer import KafkaConsumerClient, message_error, to_message
from im_infra.mq._internal.metrics import ConsumerMetrics
from im_infra.mq._internal.offsets import (
    PartitionKey,
    Runs,
    add_finished,
    add_run,
    committable_runs,
    runs_of,
)
from im_infra.mq._internal.ordering import StartGate, chains
from im_infra.mq._internal.retry_topics import subscription
from im_infra.mq._internal.validate import subscription_topics
from im_infra.mq.batch import BatchCallback
from im_infra.mq.config import RetryTopicsConfig
from im_infra.mq.dead_letter import RETRY_DUE_HEADER, RETRY_GROUP_HEADER
from im_infra.mq.errors import ConfigError, ConsumerError
from im_infra.mq.message import Message
from im_infra.mq.retry import RetryPolicy

if TYPE_CHECKING:
    from im_infra.mq.admin import KafkaAdminClient
    from im_infra.mq.producer import KafkaProducer

__all__ = ["Batches", "ConsumerCore", "HandOver", "no_handler"]

_BATCH = 500
#: Longest time a finished message's offset waits to be stored while a batch is in progress
#: (checked when the partition changes and every 16 messages of one partition: a run's count
#: with the low bits ``_CLOCK_MASK`` clear; cheaper than a counter of its own).
_STORE_INTERVAL_S = 0.1
_CLOCK_MASK = 15

#: Hands a run of polled confluent-kafka messages (none with an error) to another thread in one
#: hop (the asyncio consumer) and waits: ``hand_over(kmsgs, done)``. It converts each with
#: :func:`to_message` only when it reaches it (a batch holding hundreds of live ``Message``
#: objects would wake the garbage collector), handles them in order, adds the finished ones to
#: the runs ``done`` (:func:`.offsets.add_run`; it reads their positions from the converted
#: messages, cheaper than the poll thread reading them again) and returns ``(finished,
#: failure)``: the first ``finished`` messages are done; ``failure`` is the exception when
#: message number ``finished`` failed its first attempt (already reported) and the core must go
#: on with its retries. ``finished`` short of the run's length without a failure means the runner
#: stopped (close, cancellation): the rest is not stored, so it is delivered again. A runner that
#: stored offsets itself (:meth:`ConsumerCore.store_finished`) adds nothing and reports all done.
HandOver = Callable[[list[Any], Runs], "tuple[int, Exception | None]"]

#: A batch subscription: the callback (taking a list of messages), max messages, max wait (s).
Batches = tuple[BatchCallback, int, float]


class ConsumerCore:
    """One consumer-group member's engine (see the module docstring)."""

    def __init__(
        self,
        properties: Mapping[str, Any],
        *,
        logger: clog.Logger | None = None,
        retry: RetryPolicy | None = None,
        dlq_producer: Callable[[], KafkaProducer] | None = None,
        poll_timeout: float = 0.2,
        close_timeout: float = 30.0,
        on_closed: Callable[[], None] | None = None,
        concurrency: int = 1,
        order_by: str = "key",
        retry_topics: RetryTopicsConfig | None = None,
        admin: Callable[[], KafkaAdminClient] | None = None,
    ) -> None:
        """See :class:`~im_infra.mq.KafkaConsumer`."""
        self._on_closed = on_closed
        if concurrency < 1:
            raise ConfigError(f"concurrency must be >= 1, got {concurrency}")
        if order_by not in ("key", "partition"):
            raise ConfigError(f"order_by must be 'key' or 'partition', got {order_by!r}")
        self.concurrency = concurrency
        self._order_by = order_by
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._in_worker = _WorkerFlag()  # set on the concurrency pool's threads
        self._log = (logger or clog.get_logger("mq")).named("consumer")
        self._auth = AuthFailure()
        self.client = KafkaConsumerClient(properties, self._log, self._auth)
        self.group_id = str(properties.get("group.id", ""))
        self._lock = threading.Lock()
        self._closing = threading.Event()
        #: Whether a stop was requested (mirrors ``_closing``): a plain attribute, read per
        #: message by the loops and runners.
        self.stopping = False
        self._stopped = threading.Event()
        self.metrics = ConsumerMetrics(self.group_id, self.client.high_watermark)
        self.handling = Handling(
            group_id=self.group_id,
            log=self._log,
            metrics=self.metrics,
            stopping=self._closing,
            retry=retry,
            topics=retry_topics,
            dlq_producer=dlq_producer,
            admin=admin,
        )
        # Non-blocking retries: the retry topics subscribed so far (the subscription only
        # grows, so retry topics of earlier delays drain), and the retry-topic partitions
        # paused until their head message is due.
        self._topics_dirty = False
        self._sources: list[str] = []
        self._retry_subs: list[str] = []
        self._retry_set: frozenset[str] = frozenset()
        self._paused: dict[PartitionKey, float] = {}  # -> due (Unix ms)
        self._poll_timeout = poll_timeout
        self._close_timeout = close_timeout
        self._running = False
        self._loop_thread: threading.Thread | None = None
        self._shut = False
        self._subscribed = False

    @property
    def properties(self) -> dict[str, Any]:
        """The librdkafka properties in use, secrets masked."""
        return dict(self.client.properties)

    @property
    def closed(self) -> bool:
        """Whether a stop was requested."""
        return self.stopping

    @property
    def retry_topics(self) -> RetryTopicsConfig:
        """The non-blocking retry settings in force."""
        return self.handling.topics

    def set_retry_topics(self, topics: RetryTopicsConfig) -> None:
        """Apply new retry-topic settings (subscribed before the next poll)."""
        if not self.handling.set_topics(topics):
            return
        self._topics_dirty = True
        self._log.info(
            "retry topics changed",
            group_id=self.group_id,
            delays_ms=list(topics.delays_ms),
            dead_letter=topics.dead_letter,
        )

    # ------------------------------------------------------------------ lifecycle
    def request_stop(self) -> None:
        """Ask the loop to stop after the message in hand, without waiting for it."""
        self.stopping = True
        self._closing.set()  # wakes a retry back-off

    def close(self, timeout: float | None = None) -> None:
        """Stop, wait up to ``timeout`` (default ``close_timeout``) for the loop (not from the
        loop's own threads), commit and leave; idempotent."""
        with self._lock:
            self.request_stop()
            running = self._running
        # A close before subscribe still releases the client; one during subscribe lets the loop
        # finish the message in hand and shut down itself.
        if running:
            if threading.current_thread() is self._loop_thread or self._in_worker.active:
                return  # the loop notices after the callback returns
            wait = self._close_timeout if timeout is None else timeout
            if not self._stopped.wait(wait):
                self._log.warning("consumer loop did not stop in time", timeout_s=wait)
        else:
            self._shutdown()  # idempotent

    # ------------------------------------------------------------------ the loop
    def run(
        self,
        topics: Sequence[str],
        handler: Handler,
        hand_over: HandOver | None = None,
        *,
        batches: Batches | None = None,
    ) -> None:
        """Subscribe and consume until stopped.

        ``handler`` (wrapped here once) handles one message on the loop's thread (or the
        concurrency workers). With ``hand_over`` each polled batch goes to it in one call instead,
        and ``handler`` only serves the retries of a message that failed there. With ``batches``
        (a batch subscription) lists of messages go to its callback instead of either.
        """
        topics = subscription_topics(topics)
        with self._lock:
            if self._closing.is_set():
                raise ConsumerError("the consumer is closed")
            if self._running:
                raise ConsumerError("subscribe is already running on this consumer")
            self._running = True
            self._loop_thread = threading.current_thread()
        client = self.client
        try:
            self._sources = list(topics)
            self._topics_dirty = False
            if self._grow_retry_subs():
                self.handling.side_producer()  # ready before the first failure, not during it
            self._subscribe()
            self._subscribed = True
            consume_batch = self._runner(handler, hand_over, batches)
            metrics, auth = self.metrics, self._auth
            more_count, more_wait = _BATCH - 1, 0.0
            if batches is not None:
                more_count, more_wait = batches[1] - 1, batches[2]
            while not self.stopping:
                timeout = self._poll_timeout
                if self._topics_dirty:
                    self._topics_dirty = False
                    if self._grow_retry_subs():
                        self._subscribe()
                if self._paused:
                    timeout = self._resume_due(timeout)
                first = client.poll(timeout)
                if auth.fresh and auth.take_fresh():  # error_cb runs inside poll, here
                    refused = auth.error(f"consumer of group {self.group_id!r}")
                    if refused is not None:
                        raise refused
                if first is None:
                    metrics.polled(())
                    continue
                batch = [first]
                more = client.consume(more_count, more_wait) if more_count else None
                if more:
                    batch.extend(more)
                metrics.polled(batch)
                if self._retry_set:
                    batch = self._hold_back(batch)
                    if not batch:
                        continue
                consume_batch(batch)
        finally:
            try:
                self._shutdown()
            finally:
                with self._lock:
                    self._running = False
                self._stopped.set()

    def _runner(
        self, handler: Handler, hand_over: HandOver | None, batches: Batches | None
    ) -> Callable[[list[Any]], None]:
        """What handles each polled batch."""
        if batches is not None:
            call = batches[0]
            return lambda batch: self.consume_list(batch, call)
        wrapped = self.handling.wrap(handler)
        if hand_over is not None:
            return lambda batch: self.consume_handed(batch, hand_over, handler)
        if self.concurrency > 1:
            return lambda batch: self.consume_concurrent(batch, wrapped)
        return lambda batch: self.consume_batch(batch, handler, wrapped)

    # ------------------------------------------------------------------ runners
    def consume_batch(self, batch: list[Any], handler: Handler, handle: Wrapped) -> None:
        """Hand each message of a polled batch to ``handle`` (``handler`` wrapped), then store
        the finished offsets.

        The hot loop of the consumer. A message counts as finished once ``handle`` returned True;
        with no retries configured (:attr:`Handling.plain`) a message without headers goes to
        ``handler`` directly (the wrapper's own fast path, inlined: a call less per message);
        its offset is stored with the rest of the partition's finished messages when the batch
        ends, and at least every ``_STORE_INTERVAL_S`` while a batch is in progress, always before
        the next poll (the only place a rebalance can revoke partitions). The messages after a
        stop request are left unstored and are delivered again to whoever gets the partition.
        """
        # librdkafka hands out runs of one partition's messages, so the loop counts the current
        # run in locals and adds it to ``done`` when the partition changes.
        done: Runs = {}
        topic, partition, count, last = "", -1, 0, -1  # the current run
        now, plain, failed = time.monotonic, self.handling.plain, self.handling.failed
        store_at = now() + _STORE_INTERVAL_S
        try:
            for kmsg in batch:
                if self.stopping:
                    break
                err = kmsg.error()
                if err is not None:
                    message_error(err, self._log)
                    continue
                msg = to_message(kmsg)
                if plain and not msg.headers:
                    try:  # the hot path: no trace context to bind, no retries
                        if (result := handler(msg)) is not None and isinstance(result, Exception):
                            raise result
                    except Exception as exc:
                        if not failed(msg, exc, 1, 1):
                            break
                elif not handle(msg):
                    break  # stopping mid-message: not stored, so it is delivered again
                if msg.partition != partition or msg.topic != topic:
                    add_run(done, topic, partition, count, last)
                    topic, partition, count = msg.topic, msg.partition, 0  # type: ignore[assignment]
                    if now() >= store_at:
                        self.store(done)
                        done.clear()
                        store_at = now() + _STORE_INTERVAL_S
                count += 1
                last = msg.offset  # type: ignore[assignment]
                if not count & _CLOCK_MASK and now() >= store_at:
                    add_run(done, topic, partition, count, last)
                    count = 0
                    self.store(done)
                    done.clear()
                    store_at = now() + _STORE_INTERVAL_S
        finally:
            add_run(done, topic, partition, count, last)
            self.store(done)

    def consume_handed(self, batch: list[Any], hand_over: HandOver, handler: Handler) -> None:
        """:meth:`consume_batch` for a batch handed to another thread in one hop.

        The runner reports how far it got; a message that failed there with retries on is
        retried here (through ``handler``, one hop per attempt: the rare path) before the rest
        of the batch is handed over again, so the partition's order holds.
        """
        msgs = [kmsg for kmsg in batch if kmsg.error() is None]  # cheaper than any(genexpr)
        if len(msgs) < len(batch):
            for kmsg in batch:
                err = kmsg.error()
                if err is not None:
                    message_error(err, self._log)
        done: Runs = {}
        start = 0
        try:
            while start < len(msgs) and not self.stopping:
                finished, failure = hand_over(msgs[start:] if start else msgs, done)
                start += finished
                if failure is None:
                    if start < len(msgs):
                        self.request_stop()  # the runner stopped: the rest is delivered again
                    break
                if not self.handling.resume(to_message(msgs[start]), handler, failure):
                    break
                add_finished(done, msgs, start, start + 1)
                start += 1
        finally:
            self.store(done)

    def messages(self, batch: list[Any]) -> list[Message]:
        """The messages of a polled batch, its error events reported."""
        msgs: list[Message] = []
        for kmsg in batch:
            err = kmsg.error()
            if err is None:
                msgs.append(to_message(kmsg))
            else:
                message_error(err, self._log)
        return msgs

    def consume_list(self, batch: list[Any], call: BatchCallback) -> None:
        """Hand a polled batch to a batch callback as one list (see :mod:`im_infra.mq.batch`);
        store every offset of the list once it is finished, none when it is not (a stop during
        a retry pause, a cancelled asyncio callback)."""
        msgs = self.messages(batch)
        if not msgs:
            return
        handling = self.handling
        flow = batch_flow(msgs, handling.policy)
        attempt = 0
        try:
            ask = next(flow)
            while True:
                kind, arg = ask
                if kind == "call":
                    attempt += 1
                    ask = flow.send(handling.call_list(call, arg, attempt))  # type: ignore[arg-type]
                else:
                    ask = flow.send(self._closing.wait(arg))  # type: ignore[arg-type]
        except StopIteration as stop:
            finished, failed, attempt = stop.value
        if not finished:
            return  # not stored: delivered again
        handling.forward_each(failed, attempt)
        self.store(runs_of((m.topic, m.partition, m.offset) for m in msgs))  # type: ignore[misc]

    # ------------------------------------------------------------ ordered concurrency
    def ordering_keys(self, msgs: Sequence[Message]) -> list[Hashable]:
        """Each message's ordering key: its partition, or (``order_by="key"``) its key within
        the topic (messages without a key are ordered by partition)."""
        if self._order_by == "partition":
            return [(m.topic, m.partition) for m in msgs]
        return [(m.topic, m.partition) if m.key is None else (m.topic, m.key) for m in msgs]

    def store_finished(self, msgs: Sequence[Message], finished: Sequence[bool]) -> None:
        """Store, per partition, the contiguous run of finished messages (never past one that
        did not finish)."""
        self.store(committable_runs([((m.topic, m.partition), m.offset) for m in msgs], finished))  # type: ignore[misc]

    def consume_concurrent(self, batch: list[Any], handle: Wrapped) -> None:
        """:meth:`consume_batch` with ``concurrency`` worker threads: one chain of same-key
        messages per task, in order; the batch ends when every chain did (so nothing is in
        flight when the next poll can revoke partitions), then the contiguous finished runs are
        stored. After a stop request in-flight messages finish and only a message that closes a
        gap in its partition's finished run starts (:class:`StartGate`)."""
        msgs = self.messages(batch)
        finished = [False] * len(msgs)
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=self.concurrency, thread_name_prefix="mq-consumer"
            )

        pending = deque(chains(self.ordering_keys(msgs)))
        gate = StartGate(lambda: self.stopping)

        def worker() -> None:
            self._in_worker.active = True
            while True:
                try:
                    chain = pending.popleft()
                except IndexError:
                    return
                for i in chain:
                    msg = msgs[i]
                    if not gate.may_start((msg.topic, msg.partition), msg.offset):
                        break  # stopping: the rest of this key is delivered again, in order
                    if not handle(msg):
                        break  # the rest of this key waits for redelivery, in order
                    finished[i] = True

        futures = [
            self._pool.submit(contextvars.copy_context().run, worker)
            for _ in range(min(self.concurrency, len(pending)))
        ]
        try:
            concurrent.futures.wait(futures)
        finally:
            self.store_finished(msgs, finished)
        for future in futures:
            future.result()  # re-raise a ConsumerError from a worker

    def store(self, done: Runs) -> None:
        """Store the offset after each partition's last finished message and count them."""
        processed = self.metrics.processed
        for topic, partition, count, next_offset in self.client.store(done):
            processed(topic, partition, count, next_offset)

    # ------------------------------------------------------------ retry topics
    def _subscribe(self) -> None:
        """(Re)subscribe to the source topics and the retry topics so far (poll thread)."""
        topics = self._sources + self._retry_subs
        self.client.subscribe(topics, self._on_assign, self._on_revoke, self._on_lost)
        self._log.info("subscribed", topics=topics, group_id=self.group_id)

    def _grow_retry_subs(self) -> bool:
        """Add the current settings' retry topics to the subscription list (creating them);
        whether any was new."""
        topics = self.handling.topics
        new = [t for t in subscription(self._sources, topics) if t not in self._retry_set]
        if not new:
            return False
        self.handling.ensure(new)
        self._retry_subs.extend(new)
        self._retry_set = frozenset(self._retry_subs)
        self.handling.retry_subscribed = True
        return True

    def _hold_back(self, batch: list[Any]) -> list[Any]:
        """Take out of ``batch`` the retry-topic messages of other consumer groups (nothing to
        do with them) and those not due yet: for each such partition,
        pause it and seek back to its first one (it is fetched again once resumed); nothing of
        that partition after it is handled, so no offset is stored past it. Paused entries
        outlive rebalances (librdkafka may or may not keep a partition's pause across one):
        resuming a partition no longer assigned does nothing."""
        now = time.time() * 1000
        retry_set, paused, group = self._retry_set, self._paused, self.group_id.encode()
        held: dict[PartitionKey, int] = {}
        out = []
        for kmsg in batch:
            topic = kmsg.topic()
            if topic in retry_set and kmsg.error() is None:
                tp = (topic, kmsg.partition())
                if tp in held:
                    continue
                due, owner = _retry_fields(kmsg)
                if owner is not None and owner != group:
                    continue
                # A message of a partition we paused (its pause lost in a rebalance) is held
                # back too, until the entry's due time; then it is looked at again.
                if tp in paused or (due is not None and due > now):
                    held[tp] = kmsg.offset()
                    paused[tp] = max(paused.get(tp, 0.0), due or 0.0)
                    continue
            out.append(kmsg)
        for (topic, partition), offset in held.items():
            # Going on after a failed seek would store offsets past the held message: the
            # adapter raises ConsumerError instead (at-least-once; the group delivers it again).
            self.client.pause_at(topic, partition, offset)
        return out

    def _resume_due(self, timeout: float) -> float:
        """Resume the paused retry-topic partitions whose message is due; the poll timeout,
        shortened to the next due time."""
        now = time.time() * 1000
        ready = [tp for tp, due in self._paused.items() if due <= now]
        for topic, partition in ready:
            del self._paused[(topic, partition)]
            self.client.resume(topic, partition)  # one at a time: a revoked one fails alone
        if not self._paused:
            return timeout
        wait = (min(self._paused.values()) - now) / 1000
        return max(0.0, min(timeout, wait))

    # ------------------------------------------------------------ rebalance and shutdown
    def _on_assign(self, partitions: list[PartitionKey]) -> None:
        self.metrics.assigned(partitions)
        self._log.info(
            "partitions assigned",
            group_id=self.group_id,
            partitions=[f"{t}[{p}]" for t, p in partitions],
        )

    def _on_revoke(self, partitions: list[PartitionKey]) -> None:
        self.metrics.revoked(partitions)
        self._log.info(
            "partitions revoked",
            group_id=self.group_id,
            partitions=[f"{t}[{p}]" for t, p in partitions],
        )
        self.client.commit("revoke")

    def _on_lost(self, partitions: list[PartitionKey]) -> None:
        self.metrics.revoked(partitions)
        self._log.warning(
            "partitions lost (their uncommitted messages will be delivered again)",
            group_id=self.group_id,
            partitions=[f"{t}[{p}]" for t, p in partitions],
        )

    def _shutdown(self) -> None:
        with self._lock:
            if self._shut:
                return
            self._shut = True
        self.metrics.close()
        try:
            if self._subscribed:
                self.client.commit("close")
            self.client.close()
        finally:
            self.handling.close()
            if self._pool is not None:
                self._pool.shutdown(wait=False)
            if self._on_closed is not None:
                self._release()
        self._log.info("consumer closed", group_id=self.group_id)

    def _release(self) -> None:
        assert self._on_closed is not None
        try:
            self._on_closed()
        except Exception as exc:  # coord unreachable: the lease expires by itself
            self._log.warning("could not release the static membership id", cause=str(exc))


def no_handler(msg: Message) -> object:  # pragma: no cover - never called
    """The per-message handler of a batch subscription, which hands lists to its callback."""
    raise AssertionError("a batch subscription hands lists to its callback")


def _retry_fields(kmsg: Any) -> tuple[float | None, bytes | None]:
    """The ``retry_due_ms`` (when valid) and ``retry_group`` headers of a confluent-kafka
    message."""
    due, group = None, None
    for name, value in kmsg.headers() or ():
        if name == RETRY_DUE_HEADER and value:
            with contextlib.suppress(ValueError):
                due = float(value)
        elif name == RETRY_GROUP_HEADER:
            group = value or b""
    return due, group


class _WorkerFlag(threading.local):
    """Per thread: whether it is one of the consumer's concurrency workers."""

    active = False
