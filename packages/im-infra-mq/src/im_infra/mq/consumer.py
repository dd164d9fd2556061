"""The blocking consumer-group member (seed ``Consumer``) on confluent-kafka.

At-least-once: librdkafka commits in the background every ``autoCommitIntervalMs``, but only
offsets this class *stored*, and it stores a message's offset only after the callback returned (or
the message went to the dead-letter topic): per partition, once per polled batch and at least every
100 ms, always before the next poll. Stored offsets are also committed when partitions are
revoked and on :meth:`KafkaConsumer.close`. A crash therefore re-delivers the messages handled since
the last commit (duplicates) but never skips one.

Around each callback the producer's ``trace_id`` header is bound as the clog trace id and its W3C
``traceparent`` (when present) is attached as the OpenTelemetry context, so spans the callback
starts are children of the producer's span.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import contextvars
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import confluent_kafka
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from im_infra import clog
from im_infra.clog.lifecycle import Closing

from ._internal.batches import batch_flow, failures, log_failure
from ._internal.client import AuthFailure, build_client
from ._internal.metrics import ConsumerMetrics, PartitionKey
from ._internal.ordering import StartGate, chains, committable
from ._internal.retry_topics import forwards, next_hop, subscription
from ._internal.tracing import bound_from
from ._internal.validate import check_topics
from .admin import KafkaAdminClient
from .admin_types import TopicInfo
from .batch import BatchCallback, check_batch_limits
from .config import RetryTopicsConfig
from .dead_letter import RETRY_DUE_HEADER, RETRY_GROUP_HEADER
from .errors import ConfigError, ConsumerError, MQError, TopicExistsError
from .message import Message
from .producer import KafkaProducer
from .protocols import ConsumeCallback
from .retry import DLQ_SUFFIX, RetryPolicy, retry_source

__all__ = ["KafkaConsumer"]

_BATCH = 500
#: Longest time a finished message's offset waits to be stored while a batch is in progress
#: (checked every ``_CLOCK_EVERY`` messages).
_STORE_INTERVAL_S = 0.1
_CLOCK_EVERY = 16
_NO_TIMESTAMP = confluent_kafka.TIMESTAMP_NOT_AVAILABLE
_IGNORED_COMMIT_ERRORS = {KafkaError._NO_OFFSET}

#: Processes one message; raising (or returning an exception instance, the seed's Go form) marks
#: it failed. The core is shared by the sync and the asyncio
#: consumers, which differ only in how they run the user's callback.
Handler = Callable[[Message], object]

#: Hands a run of polled confluent-kafka messages (none with an error) to another thread's runner
#: in one hop (the asyncio consumer) and waits. The runner converts each with :func:`to_message`
#: only when it reaches it (a batch holding hundreds of live ``Message`` objects would wake the
#: garbage collector), handles them in order, one at a time, and returns ``(finished, failure)``:
#: the first ``finished`` messages are done (a failing callback without a retry policy is logged
#: and counts as done); ``failure`` is the exception when message number ``finished`` failed its
#: first attempt (already logged) and the core must go on with its retries. ``finished`` short of
#: the run's length without a failure means the runner stopped (close, cancellation): the rest is
#: not stored, so it is delivered again.
BatchHandler = Callable[[list[Any]], "tuple[int, Exception | None]"]

#: A batch subscription: the callback (taking a list of messages), max messages, max wait (s).
Batches = tuple[BatchCallback, int, float]


#: ``Message`` without running its dataclass ``__init__`` (see :func:`to_message`).
_new_message = object.__new__


def to_message(kmsg: Any) -> Message:
    """Convert a confluent-kafka message into a :class:`Message`.

    One per consumed message, so it sets the slots directly: calling the dataclass with seven
    arguments costs ~1,100 more CPU instructions per message (a third of the conversion, measured
    with cachegrind). Every field is set here; ``test_to_message_sets_every_field`` fails when
    ``Message`` gains one this does not set.
    """
    msg: Message = _new_message(Message)
    raw_headers = kmsg.headers()
    msg.headers = {k: b"" if v is None else v for k, v in raw_headers} if raw_headers else {}
    msg.topic = kmsg.topic()
    msg.key = kmsg.key()
    msg.value = kmsg.value()
    msg.partition = kmsg.partition()
    msg.offset = kmsg.offset()
    ts_type, ts = kmsg.timestamp()
    msg.timestamp_ms = None if ts_type == _NO_TIMESTAMP else ts
    return msg


class KafkaConsumer(Closing):
    """A consumer-group member; build it with :func:`im_infra.mq.new_consumer`."""

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
        """Create the member from ready librdkafka ``properties`` (it joins on subscribe).

        ``on_closed`` runs once the member has left the group (it releases the static
        membership id, see :mod:`im_infra.mq.membership`). ``retry_topics``: non-blocking
        retries (:meth:`set_retry_topics` changes them); ``dlq_producer`` writes to the retry
        and dead-letter topics, which ``admin`` creates on first use.
        """
        self._on_closed = on_closed
        if concurrency < 1:
            raise ConfigError(f"concurrency must be >= 1, got {concurrency}")
        if order_by not in ("key", "partition"):
            raise ConfigError(f"order_by must be 'key' or 'partition', got {order_by!r}")
        self.concurrency = concurrency
        self._order_by = order_by
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._dlq_lock = threading.Lock()
        self._in_worker = _WorkerFlag()  # set on the concurrency pool's threads
        self._log = (logger or clog.get_logger("mq")).named("consumer")
        self._auth = AuthFailure()
        self._consumer, self._properties = build_client(
            confluent_kafka.Consumer, "consumer", properties, self._log, auth=self._auth
        )
        self._group_id = str(properties.get("group.id", ""))
        self._retry = retry
        if retry is not None and retry.dead_letter and dlq_producer is None:
            raise ConfigError("RetryPolicy.dead_letter needs a producer for the dead-letter topic")
        self._dlq_factory = dlq_producer
        self._dlq: KafkaProducer | None = None
        # Non-blocking retries: the current settings (replaced live), the retry topics
        # subscribed so far (the subscription only grows, so retry topics of earlier delays
        # drain), and the retry-topic partitions paused until their head message is due.
        self._topics = RetryTopicsConfig() if retry_topics is None else retry_topics
        if self._topics.enabled and dlq_producer is None:
            raise ConfigError("retry topics need a producer for the retry topics")
        self._topics_dirty = False
        self._sources: list[str] = []
        self._retry_subs: list[str] = []
        self._retry_set: frozenset[str] = frozenset()
        self._paused: dict[PartitionKey, float] = {}  # -> due (Unix ms)
        self._admin_factory = admin
        self._admin: KafkaAdminClient | None = None
        self._ensured: set[str] = set()
        self._poll_timeout = poll_timeout
        self._close_timeout = close_timeout
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._stopping = False  # mirrors _closing: one attribute read per message in the loop
        self._stopped = threading.Event()
        self._running = False
        self._loop_thread: threading.Thread | None = None
        self._shut = False
        self._subscribed = False
        self._metrics = ConsumerMetrics(self._group_id, self._high_watermark)

    @property
    def properties(self) -> dict[str, Any]:
        """The librdkafka properties in use, secrets masked."""
        return dict(self._properties)

    @property
    def group_id(self) -> str:
        """The consumer group this member belongs to."""
        return self._group_id

    # ------------------------------------------------------------------ public API
    def subscribe(self, topics: Sequence[str], callback: ConsumeCallback) -> None:
        """Join the group on ``topics`` and call ``callback(msg)`` per message until closed.

        Blocks the calling thread. A callback that raises, or returns an exception instance (the
        seed's "returns an error"), has failed: it is logged with topic/partition/offset (and
        retried / dead-lettered when a :class:`RetryPolicy` was given); consumption continues.
        Returns after :meth:`close`; raises :class:`ConsumerError` on an unrecoverable error,
        :class:`AuthenticationError` (a ``ConsumerError``) when the broker refuses the SASL
        credentials (as the Java client's ``poll`` does; librdkafka alone would keep retrying).
        """
        self.run(topics, callback)

    def subscribe_batch(
        self,
        topics: Sequence[str],
        callback: BatchCallback,
        *,
        max_messages: int = 100,
        max_wait: float = 0.5,
    ) -> None:
        """Like :meth:`subscribe`, calling ``callback(messages)`` with lists of messages.

        A list holds up to ``max_messages``, gathered for up to ``max_wait`` seconds after the
        first one (never empty). Offsets are stored after the callback returned for the whole
        list. Raising fails every message of the list, :class:`~im_infra.mq.BatchFailure`
        only those it names; failed ones are retried as a smaller list under the
        :class:`RetryPolicy`, then go to their retry topic / the dead-letter topic one by one
        (see :mod:`im_infra.mq.batch`). No trace id is bound around the call: use
        :func:`~im_infra.mq.message_trace` per message. ``consumer.concurrency`` does not apply
        (one list at a time). Raises :class:`ConfigError` for bad limits.
        """
        check_batch_limits(max_messages, max_wait)
        self.run(topics, no_handler, batches=(callback, max_messages, float(max_wait)))

    def close(self, timeout: float | None = None) -> None:
        """Stop consuming: finish the message in hand, commit stored offsets, leave the group.

        Safe from any thread (including from the callback itself) and idempotent. When called
        from another thread it waits up to ``timeout`` (default ``close_timeout``) seconds for
        the loop to finish.
        """
        with self._lock:
            self._request_stop()
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

    def request_stop(self) -> None:
        """Ask the loop to stop after the message in hand, without waiting for it."""
        self._request_stop()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` (or :meth:`request_stop`) was called."""
        return self._stopping  # set with _closing; the asyncio runner reads it per message

    @property
    def retry_topics(self) -> RetryTopicsConfig:
        """The non-blocking retry settings in force (``consumer.retryTopics``)."""
        return self._topics

    def set_retry_topics(self, topics: RetryTopicsConfig) -> None:
        """Apply new retry-topic settings (the live config does, from its watch thread).

        Later failures follow them; the consumer subscribes to new retry topics before its
        next poll and keeps the old ones until it closes (their messages drain)."""
        if topics == self._topics:
            return
        if topics.enabled and self._dlq_factory is None:
            raise ConfigError("retry topics need a producer for the retry topics")
        self._topics = topics
        self._topics_dirty = True
        self._log.info(
            "retry topics changed",
            group_id=self._group_id,
            delays_ms=list(topics.delays_ms),
            dead_letter=topics.dead_letter,
        )

    # ------------------------------------------------------------------ the shared core
    def run(
        self,
        topics: Sequence[str],
        handler: Handler,
        batch_handler: BatchHandler | None = None,
        *,
        batches: Batches | None = None,
    ) -> None:
        """The consume loop shared by the blocking and asyncio consumers.

        ``handler`` handles one message on the loop's thread. With ``batch_handler`` each polled
        batch goes to it in one call instead (one thread hop per batch), and ``handler`` only
        serves the retries of a message that failed there. With ``batches`` (a batch
        subscription) lists of messages go to its callback instead of either.
        """
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
            self._loop_thread = threading.current_thread()
        consumer = self._consumer
        try:
            self._sources = list(topics)
            self._topics_dirty = False
            if self._grow_retry_subs():
                self._side_producer()  # ready before the first failure, not during it
            self._subscribe()
            self._subscribed = True
            metrics, consume_batch, auth = self._metrics, self._consume_batch, self._auth
            more_count, more_wait = _BATCH - 1, 0.0
            if batches is not None:
                call, max_messages, more_wait = batches
                more_count = max_messages - 1

                def consume_batch(batch: list[Any], handler: Handler) -> None:
                    self._consume_list(batch, call)

            elif batch_handler is not None:
                hand_over = batch_handler

                def consume_batch(batch: list[Any], handler: Handler) -> None:
                    self._consume_handed(batch, hand_over, handler)

            elif self.concurrency > 1:
                consume_batch = self._consume_concurrent

            while not self._stopping:
                timeout = self._poll_timeout
                if self._topics_dirty:
                    self._topics_dirty = False
                    if self._grow_retry_subs():
                        self._subscribe()
                if self._paused:
                    timeout = self._resume_due(timeout)
                first = consumer.poll(timeout)
                if auth.fresh and auth.take_fresh():  # error_cb runs inside poll, here
                    refused = auth.error(f"consumer of group {self._group_id!r}")
                    if refused is not None:
                        raise refused
                if first is None:
                    metrics.polled(())
                    continue
                batch = [first]
                more = consumer.consume(more_count, more_wait) if more_count else None
                if more:
                    batch.extend(more)
                metrics.polled(batch)
                if self._retry_set:
                    batch = self._hold_back(batch)
                    if not batch:
                        continue
                consume_batch(batch, handler)
        except KafkaException as exc:
            raise ConsumerError(f"consumer failed: {exc}") from exc
        finally:
            try:
                self._shutdown()
            finally:
                with self._lock:
                    self._running = False
                self._stopped.set()

    # ------------------------------------------------------------------ internals
    def _consume_batch(self, batch: list[Any], handler: Handler) -> None:
        """Hand each message of a polled batch to ``handler``, then store the finished offsets.

        The hot loop of the consumer. A message counts as finished once its callback returned
        (or failed and was logged, retried, dead-lettered); its offset is stored with the rest of
        the partition's finished messages when the batch ends, and at least every
        ``_STORE_INTERVAL_S`` while a batch is in progress, always before the next poll (the only
        place a rebalance can revoke partitions). The messages after a stop request are left
        unstored and are delivered again to whoever gets the partition.
        """
        # Finished messages per partition: (topic, partition) -> [count, offset of the last one].
        # librdkafka hands out runs of one partition's messages, so the loop counts the current
        # run in locals and adds it to ``done`` when the partition changes.
        done: dict[PartitionKey, list[int]] = {}
        topic, partition, count, last = "", -1, 0, -1  # the current run
        plain, now = self._retry is None and not self._topics.enabled, time.monotonic
        store_at, seen = now() + _STORE_INTERVAL_S, 0
        try:
            for kmsg in batch:
                if self._stopping:
                    break
                err = kmsg.error()
                if err is not None:
                    self._on_message_error(err)
                    continue
                msg = to_message(kmsg)
                if plain and not msg.headers:
                    # The hot path: no trace context to bind, no retries.
                    try:
                        if (result := handler(msg)) is not None and isinstance(result, Exception):
                            raise result
                    except Exception as exc:
                        if not self._failed(msg, exc, 1, 1):
                            break
                elif not self._handle_traced(msg, handler, None):
                    break  # stopping mid-message: not stored, so it is delivered again
                if msg.partition != partition or msg.topic != topic:
                    _add_run(done, topic, partition, count, last)
                    topic, partition, count = msg.topic, msg.partition, 0  # type: ignore[assignment]
                count += 1
                last = msg.offset  # type: ignore[assignment]
                seen += 1
                if not seen % _CLOCK_EVERY and now() >= store_at:
                    _add_run(done, topic, partition, count, last)
                    count = 0
                    self._store(done)
                    done.clear()
                    store_at = now() + _STORE_INTERVAL_S
        finally:
            _add_run(done, topic, partition, count, last)
            self._store(done)

    def _consume_handed(self, batch: list[Any], hand_over: BatchHandler, handler: Handler) -> None:
        """:meth:`_consume_batch` for a batch handed to another thread in one hop.

        The runner reports how far it got; a message that failed there with a retry policy set
        is retried here (through ``handler``, one hop per attempt: the rare path) before the rest
        of the batch is handed over again, so the partition's order holds.
        """
        msgs = [kmsg for kmsg in batch if kmsg.error() is None]  # cheaper than any(genexpr)
        if len(msgs) < len(batch):
            for kmsg in batch:
                err = kmsg.error()
                if err is not None:
                    self._on_message_error(err)
        done: dict[PartitionKey, list[int]] = {}
        start = 0
        try:
            while start < len(msgs) and not self._stopping:
                finished, failure = hand_over(msgs[start:] if start else msgs)
                _add_finished(done, msgs, start, start + finished)
                start += finished
                if failure is None:
                    if start < len(msgs):
                        self._request_stop()  # the runner stopped: the rest is delivered again
                    break
                if not self._handle_traced(to_message(msgs[start]), handler, failure):
                    break
                _add_finished(done, msgs, start, start + 1)
                start += 1
        finally:
            self._store(done)

    def _messages(self, batch: list[Any]) -> list[Message]:
        """The messages of a polled batch, its error events reported."""
        msgs: list[Message] = []
        for kmsg in batch:
            err = kmsg.error()
            if err is None:
                msgs.append(to_message(kmsg))
            else:
                self._on_message_error(err)
        return msgs

    def _consume_list(self, batch: list[Any], call: BatchCallback) -> None:
        """Hand a polled batch to a batch callback as one list (see :mod:`im_infra.mq.batch`);
        store every offset of the list once it is finished, none when it is not (a stop during
        a retry pause, a cancelled asyncio callback)."""
        msgs = self._messages(batch)
        if not msgs:
            return
        flow = batch_flow(msgs, self._retry)
        attempts = 1 if self._retry is None else self._retry.max_attempts
        attempt = 0
        try:
            ask = next(flow)
            while True:
                kind, arg = ask
                if kind == "call":
                    attempt += 1
                    ask = flow.send(self._call_list(call, arg, attempt, attempts))  # type: ignore[arg-type]
                else:
                    ask = flow.send(self._closing.wait(arg))  # type: ignore[arg-type]
        except StopIteration as stop:
            finished, failed, attempt = stop.value
        if not finished:
            return  # not stored: delivered again
        for msg, exc in failed:
            with bound_from(msg.headers):
                self._forward(msg, exc, attempt)
        done: dict[PartitionKey, list[int]] = {}
        for msg in msgs:
            _add_run(done, msg.topic, msg.partition, 1, msg.offset)  # type: ignore[arg-type]
        self._store(done)

    def _call_list(
        self, call: BatchCallback, msgs: list[Message], attempt: int, attempts: int
    ) -> dict[int, Exception] | None:
        """Call a batch callback; which messages failed (None: abandoned, not stored)."""
        try:
            if (result := call(list(msgs))) is not None and isinstance(result, Exception):
                raise result
            return {}
        except Exception as exc:
            if isinstance(exc, AbortedError) and self._closing.is_set():
                return None
            failed = failures(exc, len(msgs))
            for i, error in failed.items():
                self._metrics.callback_error(msgs[i].topic, error)
            log_failure(self._log, msgs, failed, attempt, attempts)
            return failed

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
        positions = [((m.topic, m.partition), m.offset) for m in msgs]
        done = {p: [c, last] for p, (c, last) in committable(positions, finished).items()}  # type: ignore[arg-type]
        self._store(done)

    def _consume_concurrent(self, batch: list[Any], handler: Handler) -> None:
        """:meth:`_consume_batch` with ``concurrency`` worker threads: one chain of same-key
        messages per task, in order; the batch ends when every chain did (so nothing is in
        flight when the next poll can revoke partitions), then the contiguous finished runs are
        stored. After a stop request in-flight messages finish and only a message that closes a
        gap in its partition's finished run starts (:class:`StartGate`)."""
        msgs = self._messages(batch)
        finished = [False] * len(msgs)
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=self.concurrency, thread_name_prefix="mq-consumer"
            )

        pending = deque(chains(self.ordering_keys(msgs)))
        gate = StartGate(lambda: self._stopping)

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
                    if not self._handle_traced(msg, handler, None):
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

    def retry_failed(self, msg: Message, handler: Handler, exc: Exception) -> bool:
        """Go on with the retries of a message whose first attempt failed elsewhere (logged
        there); ``False`` when it must not be stored. Blocking: run it in a worker thread."""
        return self._handle_traced(msg, handler, exc)

    def report_failure(self, msg: Message, exc: Exception) -> None:
        """Log a callback's failed first attempt (from inside the ``except`` clause, with the
        message's trace id bound): the batch runner of the asyncio consumer calls it."""
        self._failed(msg, exc, 1, 1 if self._retry is None else self._retry.max_attempts)

    @property
    def retries(self) -> bool:
        """Whether a failing callback is retried (a :class:`RetryPolicy` was given, or retry
        topics are on or still subscribed)."""
        return self._retry is not None or self._topics.enabled or bool(self._retry_set)

    def _handle_traced(self, msg: Message, handler: Handler, failed: Exception | None) -> bool:
        """:meth:`_handle` with the producer's trace id and trace context bound around it (and
        around our log lines about it)."""
        with bound_from(msg.headers):
            return self._handle(msg, handler, failed)

    def _store(self, done: dict[PartitionKey, list[int]]) -> None:
        """Store the offset after each partition's last finished message (one call per
        partition, so a partition revoked meanwhile fails alone) and count them."""
        for (topic, partition), (count, last) in done.items():
            try:
                self._consumer.store_offsets(offsets=[TopicPartition(topic, partition, last + 1)])
            except KafkaException as exc:
                # The partition was revoked meanwhile: its new owner re-delivers the messages.
                self._log.warning(
                    "could not store offset",
                    topic=topic,
                    partition=partition,
                    offset=last,
                    cause=str(exc),
                )
                continue
            self._metrics.processed(topic, partition, count, last + 1)

    def _request_stop(self) -> None:
        self._stopping = True
        self._closing.set()  # wakes a retry back-off

    def _failed(self, msg: Message, exc: Exception, attempt: int, attempts: int) -> bool:
        """Log a failed callback; ``False`` when the failure means "stop, do not store"."""
        if isinstance(exc, AbortedError) and self._closing.is_set():
            return False  # the asyncio iterator was abandoned
        self._metrics.callback_error(msg.topic, exc)
        # Called from inside the except clause: exception() picks up the active exception.
        self._log.exception(
            "consume callback failed",
            topic=msg.topic,
            partition=msg.partition,
            offset=msg.offset,
            attempt=attempt,
            max_attempts=attempts,
        )
        return True

    def _handle(self, msg: Message, handler: Handler, failed: Exception | None = None) -> bool:
        """Run the callback with retries; ``False`` when the offset must not be stored.

        ``failed``: the first attempt already ran elsewhere and failed with it (logged there).
        """
        retry = self._retry
        attempts = 1 if retry is None else retry.max_attempts
        attempt = 1
        while True:
            if failed is None:
                try:
                    if (result := handler(msg)) is not None and isinstance(result, Exception):
                        raise result  # the seed's Go form: returning an error is a failure
                    return True
                except Exception as exc:
                    if not self._failed(msg, exc, attempt, attempts):
                        return False
                    failed = exc
            if retry is None and not forwards(msg, self._topics):
                return True  # the seed's behaviour: log and go on
            if attempt >= attempts:
                self._forward(msg, failed, attempt)
                return True
            assert retry is not None  # attempts > 1
            if self._closing.wait(retry.pause(attempt)):
                return False
            attempt += 1
            failed = None

    def _forward(self, msg: Message, exc: Exception, attempts: int) -> None:
        """Produce a message that failed its last attempt here to its next retry topic or to
        the dead-letter topic (or nowhere: logged and skipped, the seed's behaviour)."""
        policy_dlq = self._retry is not None and self._retry.dead_letter
        hop = next_hop(msg, exc, attempts, self._topics, policy_dlq, self._group_id)
        if hop is None:
            return
        producer = self._side_producer()
        target = hop.message.topic
        dead = hop.delay_ms is None
        self._ensure([target])
        try:
            producer.send_sync(hop.message, timeout=30.0)
        except MQError as dlq_exc:
            self._count_forward(msg.topic, hop.delay_ms, dlq_exc)
            self._log.exception(
                f"could not write message to the {'dead-letter' if dead else 'retry'} topic; "
                "it is skipped",
                topic=msg.topic,
                partition=msg.partition,
                offset=msg.offset,
                dlq_topic=target,
            )
            return
        self._count_forward(msg.topic, hop.delay_ms, None)
        if dead:
            self._log.warning(
                "message sent to the dead-letter topic",
                topic=msg.topic,
                partition=msg.partition,
                offset=msg.offset,
                dlq_topic=target,
            )
        else:
            self._log.info(
                "message sent to a retry topic",
                topic=msg.topic,
                partition=msg.partition,
                offset=msg.offset,
                retry_topic=target,
                delay_ms=hop.delay_ms,
            )

    def _count_forward(self, topic: str, delay_ms: int | None, error: MQError | None) -> None:
        if delay_ms is None:
            self._metrics.dead_lettered(topic, error)
        else:
            self._metrics.retried(topic, delay_ms, error)

    def _side_producer(self) -> KafkaProducer:
        """The producer writing to the retry and dead-letter topics (created on first use)."""
        with self._dlq_lock:  # concurrent handlers may fail at once
            if self._dlq is None:
                assert self._dlq_factory is not None
                self._dlq = self._dlq_factory()
            return self._dlq

    # ------------------------------------------------------------ retry topics
    def _subscribe(self) -> None:
        """(Re)subscribe to the source topics and the retry topics so far (poll thread)."""
        topics = self._sources + self._retry_subs
        self._consumer.subscribe(
            topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )
        self._log.info("subscribed", topics=topics, group_id=self._group_id)

    def _grow_retry_subs(self) -> bool:
        """Add the current settings' retry topics to the subscription list (creating them);
        whether any was new."""
        new = [t for t in subscription(self._sources, self._topics) if t not in self._retry_set]
        if not new:
            return False
        self._ensure(new)
        self._retry_subs.extend(new)
        self._retry_set = frozenset(self._retry_subs)
        return True

    def _ensure(self, names: list[str]) -> None:
        """Create the retry / dead-letter topics ``names`` with their source topic's partition
        count and replication factor, once each (for brokers that do not auto-create topics).
        A failure is logged: the topic may exist anyway, or be auto-created."""
        if self._admin_factory is None:
            return
        with self._dlq_lock:
            missing = [n for n in names if n not in self._ensured]
            if not missing:
                return
            if self._admin is None:
                self._admin = self._admin_factory()
            sources: dict[str, TopicInfo | MQError] = {}  # one look-up per source topic
            for name in missing:
                self._ensured.add(name)  # tried once, whatever the outcome
                source = retry_source(name) or name.removesuffix(DLQ_SUFFIX)
                if source not in sources:
                    try:
                        sources[source] = self._admin.describe_topic(source)
                    except MQError as exc:
                        sources[source] = exc
                info = sources[source]
                try:
                    if isinstance(info, MQError):
                        raise info
                    self._admin.create_topic(name, info.partitions, info.replication_factor)
                except TopicExistsError:
                    continue  # exists with another partition count: usable
                except MQError as exc:
                    self._log.warning("could not create topic", topic=name, cause=str(exc))

    def _hold_back(self, batch: list[Any]) -> list[Any]:
        """Take out of ``batch`` the retry-topic messages of other consumer groups (nothing to
        do with them) and those not due yet: for each such partition,
        pause it and seek back to its first one (it is fetched again once resumed); nothing of
        that partition after it is handled, so no offset is stored past it. Paused entries
        outlive rebalances (librdkafka may or may not keep a partition's pause across one):
        resuming a partition no longer assigned does nothing."""
        now = time.time() * 1000
        retry_set, paused, group = self._retry_set, self._paused, self._group_id.encode()
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
            where = TopicPartition(topic, partition, offset)
            self._consumer.pause([where])
            try:
                self._consumer.seek(where)
            except KafkaException as exc:
                # Going on would store offsets past the held message: stop instead (at-least-
                # once; the group delivers it again).
                raise ConsumerError(
                    f"could not seek {topic}[{partition}] back to {offset}: {exc}"
                ) from exc
        return out

    def _resume_due(self, timeout: float) -> float:
        """Resume the paused retry-topic partitions whose message is due; the poll timeout,
        shortened to the next due time."""
        now = time.time() * 1000
        ready = [tp for tp, due in self._paused.items() if due <= now]
        for topic, partition in ready:
            del self._paused[(topic, partition)]
            try:  # one at a time: a partition revoked meanwhile fails alone
                self._consumer.resume([TopicPartition(topic, partition)])
            except KafkaException as exc:
                self._log.warning(
                    "could not resume a retry partition",
                    topic=topic,
                    partition=partition,
                    cause=str(exc),
                )
        if not self._paused:
            return timeout
        wait = (min(self._paused.values()) - now) / 1000
        return max(0.0, min(timeout, wait))

    def _on_message_error(self, err: KafkaError) -> None:
        if err.code() == KafkaError._PARTITION_EOF:
            return
        if err.fatal():
            raise ConsumerError(f"fatal consumer error: {err.str()} ({err.name()})")
        self._log.warning("consumer error", cause=err.str(), code=err.name())

    def _commit(self, reason: str) -> None:
        try:
            self._consumer.commit(asynchronous=False)
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if isinstance(err, KafkaError) and err.code() in _IGNORED_COMMIT_ERRORS:
                return
            self._log.warning("offset commit failed", reason=reason, cause=str(exc))

    def _on_assign(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        self._metrics.assigned((p.topic, p.partition) for p in partitions)
        self._log.info(
            "partitions assigned",
            group_id=self._group_id,
            partitions=[f"{p.topic}[{p.partition}]" for p in partitions],
        )

    def _on_revoke(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        self._metrics.revoked((p.topic, p.partition) for p in partitions)
        self._log.info(
            "partitions revoked",
            group_id=self._group_id,
            partitions=[f"{p.topic}[{p.partition}]" for p in partitions],
        )
        self._commit("revoke")

    def _on_lost(self, _consumer: Any, partitions: list[TopicPartition]) -> None:
        self._metrics.revoked((p.topic, p.partition) for p in partitions)
        self._log.warning(
            "partitions lost (their uncommitted messages will be delivered again)",
            group_id=self._group_id,
            partitions=[f"{p.topic}[{p.partition}]" for p in partitions],
        )

    def _shutdown(self) -> None:
        with self._lock:
            if self._shut:
                return
            self._shut = True
        self._metrics.close()
        try:
            if self._subscribed:
                self._commit("close")
            self._consumer.close()
        except (KafkaException, RuntimeError) as exc:
            self._log.warning("consumer close failed", cause=str(exc))
        finally:
            if self._dlq is not None:
                self._dlq.close()
            if self._admin is not None:
                self._admin.close()
            if self._pool is not None:
                self._pool.shutdown(wait=False)
            if self._on_closed is not None:
                self._release()
        self._log.info("consumer closed", group_id=self._group_id)

    def _release(self) -> None:
        assert self._on_closed is not None
        try:
            self._on_closed()
        except Exception as exc:  # coord unreachable: the lease expires by itself
            self._log.warning("could not release the static membership id", cause=str(exc))

    def _high_watermark(self, topic: str, partition: int) -> int | None:
        """librdkafka's cached high watermark of a partition (no broker request). Consume-loop
        thread only: confluent-kafka blocks this call while another thread polls."""
        try:
            _low, high = self._consumer.get_watermark_offsets(
                TopicPartition(topic, partition), cached=True
            )
        except (KafkaException, RuntimeError):
            return None
        return int(high) if high >= 0 else None


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


def _add_run(
    done: dict[PartitionKey, list[int]], topic: str, partition: int, count: int, last: int
) -> None:
    """Add a run of ``count`` finished messages of one partition, ending at ``last``."""
    if count:
        state = done.get((topic, partition))
        if state is None:
            done[(topic, partition)] = [count, last]
        else:
            state[0] += count
            state[1] = last


def _add_finished(
    done: dict[PartitionKey, list[int]], kmsgs: list[Any], start: int, end: int
) -> None:
    """Add confluent-kafka messages ``kmsgs[start:end]`` (finished, in consumption order)."""
    topic, partition, count, last = "", -1, 0, -1  # the current run of one partition
    for i in range(start, end):
        kmsg = kmsgs[i]
        p = kmsg.partition()
        if p != partition or kmsg.topic() != topic:
            _add_run(done, topic, partition, count, last)
            topic, partition, count = kmsg.topic(), p, 0
        count += 1
        last = kmsg.offset()
    _add_run(done, topic, partition, count, last)


class _WorkerFlag(threading.local):
    """Per thread: whether it is one of the consumer's concurrency workers."""

    active = False


class AbortedError(Exception):
    """Raised into the core when an asyncio iterator is abandoned mid-message (not stored)."""
