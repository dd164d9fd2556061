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

from ._internal.client import AuthFailure, build_client
from ._internal.metrics import ConsumerMetrics, PartitionKey
from ._internal.ordering import chains, committable
from ._internal.tracing import bound_from
from ._internal.validate import check_topics
from .dead_letter import dead_letter_headers
from .errors import ConfigError, ConsumerError, MQError
from .interfaces import ConsumeCallback
from .message import Message
from .producer import KafkaProducer
from .retry import DLQ_SUFFIX, RetryPolicy

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
    ) -> None:
        """Create the member from ready librdkafka ``properties`` (it joins on subscribe).

        ``on_closed`` runs once the member has left the group (it releases the static
        membership id, see :mod:`im_infra.mq.membership`).
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

    # ------------------------------------------------------------------ the shared core
    def run(
        self,
        topics: Sequence[str],
        handler: Handler,
        batch_handler: BatchHandler | None = None,
    ) -> None:
        """The consume loop shared by the blocking and asyncio consumers.

        ``handler`` handles one message on the loop's thread. With ``batch_handler`` each polled
        batch goes to it in one call instead (one thread hop per batch), and ``handler`` only
        serves the retries of a message that failed there.
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
            consumer.subscribe(
                list(topics),
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_lost,
            )
            self._subscribed = True
            self._log.info("subscribed", topics=list(topics), group_id=self._group_id)
            metrics, consume_batch, auth = self._metrics, self._consume_batch, self._auth
            if batch_handler is not None:
                hand_over = batch_handler

                def consume_batch(batch: list[Any], handler: Handler) -> None:
                    self._consume_handed(batch, hand_over, handler)

            elif self.concurrency > 1:
                consume_batch = self._consume_concurrent

            while not self._stopping:
                first = consumer.poll(self._poll_timeout)
                if auth.fresh and auth.take_fresh():  # error_cb runs inside poll, here
                    refused = auth.error(f"consumer of group {self._group_id!r}")
                    if refused is not None:
                        raise refused
                if first is None:
                    metrics.polled(())
                    continue
                batch = [first]
                more = consumer.consume(_BATCH - 1, 0)
                if more:
                    batch.extend(more)
                metrics.polled(batch)
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
        plain, now = self._retry is None, time.monotonic
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
        stored. After a stop request no new message starts; in-flight ones finish."""
        msgs: list[Message] = []
        for kmsg in batch:
            err = kmsg.error()
            if err is None:
                msgs.append(to_message(kmsg))
            else:
                self._on_message_error(err)
        finished = [False] * len(msgs)
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=self.concurrency, thread_name_prefix="mq-consumer"
            )

        pending = deque(chains(self.ordering_keys(msgs)))

        def worker() -> None:
            self._in_worker.active = True
            while not self._stopping:
                try:
                    chain = pending.popleft()
                except IndexError:
                    return
                for i in chain:
                    if self._stopping or not self._handle_traced(msgs[i], handler, None):
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
        """Whether a failing callback is retried (a :class:`RetryPolicy` was given)."""
        return self._retry is not None

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
            if retry is None:
                return True  # the seed's behaviour: log and go on
            if attempt >= attempts:
                if retry.dead_letter:
                    self._dead_letter(msg, failed, attempt)
                return True
            if self._closing.wait(retry.pause(attempt)):
                return False
            attempt += 1
            failed = None

    def _dead_letter(self, msg: Message, exc: Exception, attempts: int) -> None:
        with self._dlq_lock:  # concurrent handlers may fail at once
            if self._dlq is None:
                assert self._dlq_factory is not None
                self._dlq = self._dlq_factory()
        headers = dead_letter_headers(msg, exc, attempts)
        target = msg.topic + DLQ_SUFFIX
        dead = Message(topic=target, key=msg.key, value=msg.value, headers=headers)
        try:
            self._dlq.send_sync(dead, timeout=30.0)
        except MQError as dlq_exc:
            self._metrics.dead_lettered(msg.topic, dlq_exc)
            self._log.exception(
                "could not write message to the dead-letter topic; it is skipped",
                topic=msg.topic,
                partition=msg.partition,
                offset=msg.offset,
                dlq_topic=target,
            )
            return
        self._metrics.dead_lettered(msg.topic, None)
        self._log.warning(
            "message sent to the dead-letter topic",
            topic=msg.topic,
            partition=msg.partition,
            offset=msg.offset,
            dlq_topic=target,
        )

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
