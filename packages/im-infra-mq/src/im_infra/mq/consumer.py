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

Layers (see docs/architecture.md): this class is the public API only; the poll loop, offset
storing and rebalance handling are :mod:`im_infra.mq._internal.consumer_core`, shared with the
asyncio consumer (:class:`~im_infra.mq.AsyncKafkaConsumer`, a sibling over the same core), over
the confluent-kafka adapter :mod:`im_infra.mq._internal.kafka_consumer`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from im_infra import clog
from im_infra.clog.lifecycle import Closing

from ._internal.consumer_core import ConsumerCore, no_handler
from .batch import BatchCallback, check_batch_limits
from .config import RetryTopicsConfig
from .protocols import ConsumeCallback
from .retry import RetryPolicy

if TYPE_CHECKING:
    from .admin import KafkaAdminClient
    from .producer import KafkaProducer

__all__ = ["KafkaConsumer"]


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
        self._core = ConsumerCore(
            properties,
            logger=logger,
            retry=retry,
            dlq_producer=dlq_producer,
            poll_timeout=poll_timeout,
            close_timeout=close_timeout,
            on_closed=on_closed,
            concurrency=concurrency,
            order_by=order_by,
            retry_topics=retry_topics,
            admin=admin,
        )

    @property
    def properties(self) -> dict[str, Any]:
        """The librdkafka properties in use, secrets masked."""
        return self._core.properties

    @property
    def group_id(self) -> str:
        """The consumer group this member belongs to."""
        return self._core.group_id

    @property
    def concurrency(self) -> int:
        """How many messages run at once (different keys; the same key runs in order)."""
        return self._core.concurrency

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
        self._core.run(topics, callback)

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
        self._core.run(topics, no_handler, batches=(callback, max_messages, float(max_wait)))

    def close(self, timeout: float | None = None) -> None:
        """Stop consuming: finish the message in hand, commit stored offsets, leave the group.

        Safe from any thread (including from the callback itself) and idempotent. When called
        from another thread it waits up to ``timeout`` (default ``close_timeout``) seconds for
        the loop to finish.
        """
        self._core.close(timeout)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._core.closed

    @property
    def retry_topics(self) -> RetryTopicsConfig:
        """The non-blocking retry settings in force (``consumer.retryTopics``)."""
        return self._core.retry_topics

    def set_retry_topics(self, topics: RetryTopicsConfig) -> None:
        """Apply new retry-topic settings (the live config does, from its watch thread).

        Later failures follow them; the consumer subscribes to new retry topics before its
        next poll and keeps the old ones until it closes (their messages drain)."""
        self._core.set_retry_topics(topics)
