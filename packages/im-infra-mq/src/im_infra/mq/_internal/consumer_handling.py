"""What happens around a consumer's callback: trace binding, retries with back-off, and
forwarding a message that failed its last attempt to its next retry topic or the dead-letter
topic. The consumer core wraps the callback once at subscribe time (:meth:`Handling.wrap`) and
then only calls the wrapped handler, which says whether the message may be stored; the core
knows nothing of traces, retries or retry topics' producers.

A handler (or a batch callback) raising :class:`NotFinishedError` while the consumer is stopping
means "this message was not handled": its offset is not stored and it is delivered again (the
asyncio consumer's abandoned iterator and cancelled callbacks use it).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from im_infra import clog
from im_infra.mq._internal.batches import failures, log_failure
from im_infra.mq._internal.metrics import ConsumerMetrics
from im_infra.mq._internal.retry_topics import forwards, next_hop
from im_infra.mq._internal.tracing import bound_from
from im_infra.mq.admin_types import TopicInfo
from im_infra.mq.batch import BatchCallback
from im_infra.mq.config import RetryTopicsConfig
from im_infra.mq.errors import ConfigError, MQError, TopicExistsError
from im_infra.mq.message import Message
from im_infra.mq.retry import DLQ_SUFFIX, RetryPolicy, retry_source

if TYPE_CHECKING:
    from im_infra.mq.admin import KafkaAdminClient
    from im_infra.mq.producer import KafkaProducer

__all__ = ["Handler", "Handling", "NotFinishedError", "Wrapped"]

#: Processes one message; raising (or returning an exception instance, the seed's Go form) marks
#: it failed.
Handler = Callable[[Message], object]
#: A wrapped handler: whether the message is finished (its offset may be stored).
Wrapped = Callable[[Message], bool]


class NotFinishedError(Exception):
    """Raised by a handler when the consumer stops mid-message: the message is not stored."""


class Handling:
    """Retry policy, retry topics and the dead-letter topic of one consumer (thread-safe for
    the concurrency workers)."""

    def __init__(
        self,
        *,
        group_id: str,
        log: clog.Logger,
        metrics: ConsumerMetrics,
        stopping: threading.Event,
        retry: RetryPolicy | None,
        topics: RetryTopicsConfig | None,
        dlq_producer: Callable[[], KafkaProducer] | None,
        admin: Callable[[], KafkaAdminClient] | None,
    ) -> None:
        if retry is not None and retry.dead_letter and dlq_producer is None:
            raise ConfigError("RetryPolicy.dead_letter needs a producer for the dead-letter topic")
        self.topics = RetryTopicsConfig() if topics is None else topics
        if self.topics.enabled and dlq_producer is None:
            raise ConfigError("retry topics need a producer for the retry topics")
        self._group_id = group_id
        self._log = log
        self._metrics = metrics
        self._stopping = stopping
        self._retry = retry
        self._attempts = 1 if retry is None else retry.max_attempts
        self._dlq_factory = dlq_producer
        self._dlq: KafkaProducer | None = None
        self._admin_factory = admin
        self._admin: KafkaAdminClient | None = None
        self._ensured: set[str] = set()
        self._lock = threading.Lock()
        #: Whether messages of retry topics are consumed (failures there are forwarded even
        #: with retry topics switched off since).
        self.retry_subscribed = False
        #: No retry policy and no retry topics: a failure is logged and the message is done.
        self.plain = retry is None and not self.topics.enabled

    # ------------------------------------------------------------------ settings
    def set_topics(self, topics: RetryTopicsConfig) -> bool:
        """Replace the retry-topic settings; whether they changed (:class:`ConfigError` when
        they need a producer this consumer does not have)."""
        if topics == self.topics:
            return False
        if topics.enabled and self._dlq_factory is None:
            raise ConfigError("retry topics need a producer for the retry topics")
        self.topics = topics
        self.plain = self._retry is None and not topics.enabled
        return True

    @property
    def retries(self) -> bool:
        """Whether a failing callback is retried or forwarded (a :class:`RetryPolicy` was given,
        or retry topics are on or still subscribed)."""
        return self._retry is not None or self.topics.enabled or self.retry_subscribed

    # ------------------------------------------------------------------ one message
    def wrap(self, handler: Handler) -> Wrapped:
        """``handler`` with its trace context bound, failures logged, retried, forwarded."""
        handle, failed = self.handle, self.failed

        def wrapped(msg: Message) -> bool:
            if msg.headers:
                with bound_from(msg.headers):
                    return handle(msg, handler, None)
            if not self.plain:
                return handle(msg, handler, None)
            try:  # the hot path: no trace context to bind, no retries (handle inlined)
                if (result := handler(msg)) is not None and isinstance(result, Exception):
                    raise result
                return True
            except Exception as exc:
                return failed(msg, exc, 1, 1)

        return wrapped

    def resume(self, msg: Message, handler: Handler, failed: Exception) -> bool:
        """Go on with the retries of a message whose first attempt ``handler`` already made
        elsewhere and failed with ``failed`` (logged there, see :meth:`report`); whether it is
        finished. Blocking (back-off pauses)."""
        with bound_from(msg.headers):
            return self.handle(msg, handler, failed)

    def report(self, msg: Message, exc: Exception) -> None:
        """Log a callback's failed first attempt (call it from the ``except`` clause, with the
        message's trace id bound)."""
        self.failed(msg, exc, 1, self._attempts)

    def handle(self, msg: Message, handler: Handler, failed: Exception | None) -> bool:
        """Run the callback with retries; ``False`` when the offset must not be stored.

        ``failed``: the first attempt already ran elsewhere and failed with it (logged there).
        """
        retry = self._retry
        attempts = self._attempts
        attempt = 1
        while True:
            if failed is None:
                try:
                    if (result := handler(msg)) is not None and isinstance(result, Exception):
                        raise result  # the seed's Go form: returning an error is a failure
                    return True
                except Exception as exc:
                    if not self.failed(msg, exc, attempt, attempts):
                        return False
                    failed = exc
            if retry is None and not forwards(msg, self.topics):
                return True  # the seed's behaviour: log and go on
            if attempt >= attempts:
                self.forward(msg, failed, attempt)
                return True
            assert retry is not None  # attempts > 1
            if self._stopping.wait(retry.pause(attempt)):
                return False
            attempt += 1
            failed = None

    def failed(self, msg: Message, exc: Exception, attempt: int, attempts: int) -> bool:
        """Log a failed callback; ``False`` when the failure means "stop, do not store"."""
        if isinstance(exc, NotFinishedError) and self._stopping.is_set():
            return False
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

    # ------------------------------------------------------------------ lists
    def call_list(
        self, call: BatchCallback, msgs: list[Message], attempt: int
    ) -> dict[int, Exception] | None:
        """Call a batch callback; which messages failed (None: abandoned, not stored)."""
        try:
            if (result := call(list(msgs))) is not None and isinstance(result, Exception):
                raise result
            return {}
        except Exception as exc:
            if isinstance(exc, NotFinishedError) and self._stopping.is_set():
                return None
            failed = failures(exc, len(msgs))
            for i, error in failed.items():
                self._metrics.callback_error(msgs[i].topic, error)
            log_failure(self._log, msgs, failed, attempt, self._attempts)
            return failed

    @property
    def policy(self) -> RetryPolicy | None:
        """The in-place retry policy (None: one attempt)."""
        return self._retry

    def forward_each(self, failed: list[tuple[Message, Exception]], attempts: int) -> None:
        """Forward the messages of a list that failed every attempt, one by one."""
        for msg, exc in failed:
            with bound_from(msg.headers):
                self.forward(msg, exc, attempts)

    # ------------------------------------------------------------------ forwarding
    def forward(self, msg: Message, exc: Exception, attempts: int) -> None:
        """Produce a message that failed its last attempt here to its next retry topic or to
        the dead-letter topic (or nowhere: logged and skipped, the seed's behaviour)."""
        policy_dlq = self._retry is not None and self._retry.dead_letter
        hop = next_hop(msg, exc, attempts, self.topics, policy_dlq, self._group_id)
        if hop is None:
            return
        producer = self.side_producer()
        target = hop.message.topic
        dead = hop.delay_ms is None
        self.ensure([target])
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

    def side_producer(self) -> KafkaProducer:
        """The producer writing to the retry and dead-letter topics (created on first use)."""
        with self._lock:  # concurrent handlers may fail at once
            if self._dlq is None:
                assert self._dlq_factory is not None
                self._dlq = self._dlq_factory()
            return self._dlq

    def ensure(self, names: list[str]) -> None:
        """Create the retry / dead-letter topics ``names`` with their source topic's partition
        count and replication factor, once each (for brokers that do not auto-create topics).
        A failure is logged: the topic may exist anyway, or be auto-created."""
        if self._admin_factory is None:
            return
        with self._lock:
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

    def close(self) -> None:
        """Release the side producer and the admin client (idempotent)."""
        if self._dlq is not None:
            self._dlq.close()
        if self._admin is not None:
            self._admin.close()
