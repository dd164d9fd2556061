"""The blocking producer (seed ``Producer``) on confluent-kafka.

Layers (see docs/architecture.md): this public class is a thin blocking driver over
``_internal/producer_core.py`` (message → produce arguments, back-pressure decision, delivery
hook, replacement after a fatal error, poller thread), which reaches confluent-kafka only through
the adapter ``_internal/kafka_producer.py``; delivery reports become errors in
``_internal/delivery.py``. :class:`~im_infra.mq.AsyncKafkaProducer` is its asyncio sibling over
the same core.

Behaviour:
- ``send`` hands the message to librdkafka and returns; delivery reports are served by the
  producer's poller thread, so each callback runs on that thread with ``None`` or a
  :class:`DeliveryError` (see docs/mq.md, "On which thread callbacks run").
- A full local queue (librdkafka's ``BufferError``) makes ``send`` wait, up to
  ``backpressure_timeout`` seconds, for the poller to drain it, then raise :class:`QueueFullError`.
- ``close`` flushes for ``close_timeout`` seconds, then purges what is left: librdkafka reports each
  purged message, so every callback gets an error; nothing is dropped silently.
- A fatal librdkafka error (e.g. ``OUT_OF_ORDER_SEQUENCE_NUMBER`` of the idempotent producer after
  a broker lost acknowledged messages) makes the librdkafka producer unusable for good; its rule
  is to replace it. The producer does that itself: a new librdkafka producer takes the sends from
  then on, and every message still queued or in flight in the old one is reported to its callback
  with a DeliveryError carrying the fatal cause (``code`` = the fatal error's name).
- The current clog trace id is added as the ``trace_id`` header unless the message has one; while
  an OpenTelemetry span is active, its W3C ``traceparent`` (and ``tracestate``/``baggage``) too,
  again never replacing a header the caller set.
- Metrics (see ``_internal/metrics.py``): deliveries counted by topic and outcome, the delivery
  latency sampled from librdkafka's own timing.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

from im_infra import clog
from im_infra.clog.lifecycle import Closing

from ._internal.delivery import DeliveryHook
from ._internal.producer_core import Backpressure, Pending, ProducerCore, with_trace
from ._internal.tracing import Headers, current_trace_headers
from .errors import MQError, ProducerClosedError, SendTimeoutError
from .message import Message
from .protocols import DeliveryCallback

__all__ = ["KafkaProducer"]

#: Messages send_batch hands to librdkafka per lock acquisition.
_BATCH_CHUNK = 1000


class KafkaProducer(Closing):
    """Thread-safe producer; build it with :func:`im_infra.mq.new_producer`."""

    def __init__(
        self,
        properties: Mapping[str, Any],
        *,
        logger: clog.Logger | None = None,
        backpressure_timeout: float = 30.0,
        close_timeout: float = 30.0,
    ) -> None:
        """Create the producer from ready librdkafka ``properties`` and start its poller."""
        self._core = ProducerCore(
            properties,
            logger=logger,
            backpressure_timeout=backpressure_timeout,
            close_timeout=close_timeout,
        )
        # Bound once: no attribute lookup through the core per message.
        self._hook = self._core.hook
        self._try_produce = self._core.try_produce

    @property
    def properties(self) -> dict[str, Any]:
        """The librdkafka properties in use, secrets masked."""
        return dict(self._core.properties)

    @property
    def backpressure_timeout(self) -> float:
        """How long ``send`` waits for room in a full local queue before raising."""
        return self._core.backpressure_timeout

    @property
    def message_timeout(self) -> float:
        """librdkafka's ``message.timeout.ms`` in seconds (the delivery deadline of a message)."""
        return self._core.message_timeout

    # ------------------------------------------------------------------ sending
    def send(self, msg: Message, callback: DeliveryCallback | None = None) -> None:
        """Queue ``msg`` and return; ``callback(None | error)`` runs from the poller thread.

        Without a callback a failed delivery is logged. Raises :class:`QueueFullError` when the
        local queue stays full for ``backpressure_timeout`` seconds, :class:`ProducerClosedError`
        after :meth:`close`.
        """
        # The core's prepare(), inlined: no call frame, no tuple per message.
        tid, trace = current_trace_headers()
        headers = None if trace is None and not msg.headers else with_trace(msg, trace)
        hook = self._hook(callback, tid)
        if not self._try_produce(msg, headers, hook):
            self._wait_for_room(msg, headers, hook)

    def send_batch(
        self, messages: Iterable[Message], callback: DeliveryCallback | None = None
    ) -> int:
        """Queue each of ``messages`` in order, as :meth:`send` would; return how many.

        Cheaper per message than :meth:`send` (see docs/mq.md): the trace context is read and
        the delivery hook built once per call, and the lock is taken once per chunk of messages.
        ``callback`` runs once per message. A full local queue is waited out as in :meth:`send`.
        When a message cannot be queued (:class:`QueueFullError`, a refused message,
        :class:`ProducerClosedError`), the error is raised with ``queued`` set to how many
        messages of this call were queued before it: those are delivered and reported as usual,
        the rest are not sent.
        """
        core = self._core
        tid, trace = core.trace()
        hook = core.hook(callback, tid)
        pending = iter(messages)
        queued = 0
        produce = core.produce_locked
        lock = core.lock
        try:
            while True:
                with lock:
                    if core.closed:
                        raise ProducerClosedError("the producer is closed")
                    for _ in range(_BATCH_CHUNK):
                        msg = next(pending, None)
                        if msg is None:
                            return queued
                        if hook.generation is not core.generation:  # replaced after a fatal
                            hook = core.hook(callback, tid)
                        # (with_trace's own first case, inlined: no call on the hot path)
                        headers = (
                            None if trace is None and not msg.headers else with_trace(msg, trace)
                        )
                        if not produce(msg, headers, hook):
                            break  # the local queue is full
                        queued += 1
                    else:
                        continue  # a whole chunk queued: let close() and other senders in
                # The local queue is full: wait for room outside the lock, as send() does.
                self._wait_for_room(msg, headers, hook)
                queued += 1
        except MQError as exc:
            exc.queued = queued
            raise

    def send_sync(self, msg: Message, timeout: float | None = None) -> None:
        """Send ``msg`` and block until the broker acknowledged it.

        ``timeout`` defaults to ``message.timeout.ms`` plus a margin (librdkafka fails the message
        by then). Raises :class:`DeliveryError` (or :class:`SendTimeoutError`) on failure.
        """
        if self._core.on_poller_thread():
            # Only the poller serves delivery reports: waiting here would wait for itself.
            raise MQError("send_sync cannot be called from a delivery callback; use send")
        done = threading.Event()
        result: list[MQError | None] = []

        def _record(err: MQError | None) -> None:
            result.append(err)
            done.set()

        self.send(msg, _record)
        wait = self._core.message_timeout + 5.0 if timeout is None else timeout
        if not done.wait(wait):
            raise SendTimeoutError(
                f"no delivery report for a message to topic {msg.topic!r} within {wait:.1f}s",
                code="_TIMED_OUT",
                retriable=True,
            )
        if result[0] is not None:
            raise result[0]

    def flush(self, timeout: float | None = None) -> int:
        """Wait until every queued message is delivered or failed; return how many remain."""
        return self._core.flush(timeout)

    def __len__(self) -> int:
        """Messages queued or in flight."""
        return len(self._core)

    # ------------------------------------------------------------------ closing
    def close(self, timeout: float | None = None) -> None:
        """Flush for ``timeout`` (default ``close_timeout``) seconds and release the client.

        Messages still undelivered are purged; each one's callback receives a
        :class:`DeliveryError` with code ``_PURGE_QUEUE``/``_PURGE_INFLIGHT``. Idempotent.
        """
        self._core.close(timeout)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._core.closed

    # ------------------------------------------------------------------ deprecated
    # Once public for the asyncio producer only; it now drives the shared core itself.
    def prepare(self, msg: Message, callback: DeliveryCallback | None) -> Pending:
        """Deprecated (removed in 0.2.0): internal to the producers."""
        _deprecated("prepare")
        return self._core.prepare(msg, callback)

    def try_produce(self, msg: Message, pending: Pending) -> bool:
        """Deprecated (removed in 0.2.0): internal to the producers."""
        _deprecated("try_produce")
        return self._try_produce(msg, *pending)

    def backpressure(self, topic: str) -> Backpressure:
        """Deprecated (removed in 0.2.0): internal to the producers."""
        _deprecated("backpressure")
        return self._core.backpressure(topic)

    # ------------------------------------------------------------------ internals
    def _wait_for_room(self, msg: Message, headers: Headers | None, hook: DeliveryHook) -> None:
        """Retry handing ``msg`` to librdkafka while its local queue is full (bounded)."""
        wait = self._core.backpressure(msg.topic)
        while True:
            time.sleep(wait.next_pause())
            if self._try_produce(msg, headers, hook):
                return


def _deprecated(name: str) -> None:
    warnings.warn(
        f"KafkaProducer.{name} is internal to the producers and will be removed in 0.2.0",
        DeprecationWarning,
        stacklevel=3,
    )


def core_of(producer: KafkaProducer) -> ProducerCore:
    """The core a blocking producer drives (for :class:`AsyncKafkaProducer` built over one)."""
    return producer._core
