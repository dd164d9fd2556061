"""The producer core shared by the blocking and the asyncio producers (their only common part).

It owns one librdkafka producer through the adapter (:mod:`.kafka_producer`) and everything both
drivers need, none of which waits on its own:

- message → produce arguments: :func:`with_trace` adds the trace headers, :meth:`ProducerCore.hook`
  the (cached) delivery hook;
- :meth:`ProducerCore.try_produce`: one non-blocking attempt, ``False`` when the local queue is
  full; :class:`Backpressure` says how long to pause before the next attempt and when to give up
  (each driver pauses its own way: ``time.sleep`` or ``asyncio.sleep``);
- the generation of the librdkafka producer and its replacement after a fatal error, and the
  poller thread that serves delivery reports (a daemon thread of the library's own, started here
  and joined by :meth:`ProducerCore.close`);
- flush, length and close.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Mapping
from typing import Any

from confluent_kafka import KafkaError, KafkaException

from im_infra import clog
from im_infra.mq.errors import DeliveryError, ProducerClosedError, QueueFullError
from im_infra.mq.message import Message
from im_infra.mq.protocols import DeliveryCallback

from .client import AuthFailure, log_client_error
from .delivery import DeliveryHook, Generation, delivery_error
from .kafka_producer import RdkProducer, error_of, fatal_of, open_producer
from .metrics import PRODUCERS_REPLACED, SYSTEM, ProducerMetrics
from .tracing import Headers, current_trace_headers
from .validate import check_headers, explain

__all__ = ["Backpressure", "Pending", "ProducerCore", "with_trace"]

POLL_INTERVAL_S = 0.1
DEFAULT_MESSAGE_TIMEOUT_MS = 300_000
#: How long the poller waits for a replaced producer to report its purged messages.
DRAIN_TIMEOUT_S = 10.0

#: What a message is produced with: its headers and its delivery hook.
Pending = tuple[Headers | None, DeliveryHook]


def with_trace(msg: Message, trace: Headers | None) -> Headers | None:
    """The headers to send ``msg`` with: its own (checked: a bad one is an
    InvalidArgumentError, never a crash in the client), plus the ``trace`` headers it does not
    set."""
    own = msg.headers
    if own:
        check_headers(own)
    if trace is None:
        return own or None  # type: ignore[return-value]  # read-only: never mutated
    return {**trace, **own}


class Backpressure:
    """Bounded waiting while librdkafka's local queue is full (shared by sync and asyncio)."""

    __slots__ = ("_deadline", "_metrics", "_pause", "_timeout", "_topic")

    def __init__(self, timeout: float, topic: str, metrics: ProducerMetrics) -> None:
        self._deadline = time.monotonic() + timeout
        self._timeout = timeout
        self._topic = topic
        self._metrics = metrics
        self._pause = 0.001

    def next_pause(self) -> float:
        """Seconds to wait before retrying; raises :class:`QueueFullError` once time is up."""
        if time.monotonic() >= self._deadline:
            self._metrics.failed(self._topic, "_QUEUE_FULL")
            raise QueueFullError(
                f"the producer's local queue stayed full for {self._timeout:.1f}s "
                f"(topic {self._topic!r}); the broker is too slow or unreachable",
                code="_QUEUE_FULL",
                retriable=True,
            )
        pause = self._pause
        self._pause = min(pause * 2, 0.05)
        return pause


class ProducerCore:
    """One librdkafka producer with im-infra's policies; thread-safe. See the module docstring."""

    def __init__(
        self,
        properties: Mapping[str, Any],
        *,
        logger: clog.Logger | None,
        backpressure_timeout: float,
        close_timeout: float,
    ) -> None:
        self.log = (logger or clog.get_logger("mq")).named("producer")
        self._raw_properties = dict(properties)
        self._auth = AuthFailure()
        self._fatal_pending: tuple[Generation, KafkaError] | None = None
        self._retired: list[tuple[RdkProducer, Generation]] = []  # replaced, not drained yet
        #: The librdkafka producer in use and its generation (replaced together, under ``lock``).
        self.client, self.properties, self.generation = self._build()
        timeout_ms = int(properties.get("message.timeout.ms", DEFAULT_MESSAGE_TIMEOUT_MS))
        self.message_timeout = timeout_ms / 1000.0
        self.backpressure_timeout = backpressure_timeout
        self.close_timeout = close_timeout
        #: Held while handing messages to the client (and by close and replacement).
        self.lock = threading.Lock()
        self.closed = False
        self._last_hook: DeliveryHook | None = None
        self.metrics = ProducerMetrics()
        self._stop = threading.Event()
        self._poller = threading.Thread(
            target=self._poll_loop,
            name=f"mq-producer-poller[{properties.get('client.id', '')}]",
            daemon=True,
        )
        self._poller.start()

    # ------------------------------------------------------------------ message → produce
    #: The current clog trace id, and the headers carrying it and the active span's W3C
    #: context (None without a trace id); no extra call frame on the send path.
    trace = staticmethod(current_trace_headers)

    def prepare(self, msg: Message, callback: DeliveryCallback | None) -> Pending:
        """Headers (the current trace id and trace context added) and the delivery hook."""
        tid, trace = current_trace_headers()
        return with_trace(msg, trace), self.hook(callback, tid)

    def hook(self, callback: DeliveryCallback | None, tid: str | None) -> DeliveryHook:
        """The delivery hook for ``callback`` run with trace id ``tid``.

        librdkafka keeps the hook of every queued message alive. Reusing the last hook when
        the callback and the trace id repeat (the common case: one callback for a stream of
        sends) avoids one tracked object per message, which would otherwise trigger costly
        full garbage collections at high send rates.
        """
        hook = self._last_hook
        if (
            hook is None
            or hook.callback is not callback
            or hook.tid != tid
            or hook.generation is not self.generation
        ):
            hook = self._last_hook = DeliveryHook(
                callback, tid, self.log, self.metrics, self.generation, self._auth
            )
        return hook

    def backpressure(self, topic: str) -> Backpressure:
        """A bounded wait for room in the local queue (each driver pauses its own way)."""
        return Backpressure(self.backpressure_timeout, topic, self.metrics)

    def try_produce(self, msg: Message, headers: Headers | None, hook: DeliveryHook) -> bool:
        """Hand ``msg`` to librdkafka; ``False`` when its local queue is full (back-pressure)."""
        with self.lock:
            if self.closed:
                raise ProducerClosedError("the producer is closed")
            return self.produce_locked(msg, headers, hook)

    def produce_locked(self, msg: Message, headers: Headers | None, hook: DeliveryHook) -> bool:
        """:meth:`try_produce` for a caller that holds the lock (and found the producer open)."""
        try:
            partition = -1 if msg.partition is None else msg.partition
            if headers is None:
                self.client.produce(msg.topic, msg.value, msg.key, partition, hook.report)
            else:
                self.client.produce(
                    msg.topic, msg.value, msg.key, partition, hook.report, None, 0, headers
                )
        except BufferError:
            return False
        except (TypeError, ValueError) as exc:  # a field of the wrong type, not UTF-8
            raise explain(msg, exc) from exc
        except KafkaException as exc:
            fatal = fatal_of(exc)
            if fatal is not None and not self.closed:
                # The librdkafka producer is dead for good: replace it and send there.
                pending = self._fatal_pending
                cause = pending[1] if pending and pending[0] is self.generation else fatal
                self.replace_locked(self.generation, cause)
                return self.produce_locked(msg, headers, self.hook(hook.callback, hook.tid))
            err = error_of(exc)
            if err is not None:
                self.metrics.failed(msg.topic, err.name())
                raise delivery_error(err, msg.topic) from exc
            self.metrics.failed(msg.topic, type(exc).__name__)
            raise DeliveryError(f"cannot send to topic {msg.topic!r}: {exc}") from exc
        return True

    # ------------------------------------------------------------------ state
    def on_poller_thread(self) -> bool:
        """Whether the caller runs on the poller thread (inside a delivery callback)."""
        return threading.current_thread() is self._poller

    def flush(self, timeout: float | None) -> int:
        """Wait until every queued message is delivered or failed; return how many remain."""
        if self.closed:
            return 0  # close() flushed and reported everything
        try:
            return self.client.flush(-1 if timeout is None else timeout)
        except RuntimeError:  # closed meanwhile
            return 0

    def __len__(self) -> int:
        return 0 if self.closed else len(self.client)

    def close(self, timeout: float | None) -> None:
        """Flush for ``timeout`` (default ``close_timeout``) seconds, purge what is left (each
        callback gets ``_PURGE_QUEUE``/``_PURGE_INFLIGHT``), stop the poller, release."""
        with self.lock:
            if self.closed:
                return
            self.closed = True
        wait = self.close_timeout if timeout is None else timeout
        client = self.client
        remaining = client.flush(wait)
        if remaining:
            self.log.warning(
                "producer closing with undelivered messages; reporting them as failed",
                undelivered=remaining,
            )
            client.purge(in_flight=True, blocking=True)
            # Serve the purge reports so each callback learns its message failed.
            client.flush(5.0)
        self._stop.set()
        if self._poller is not threading.current_thread():
            self._poller.join()
        self._drain_retired()
        client.close()
        self.metrics.close()

    # ------------------------------------------------------------------ fatal errors
    def _build(self) -> tuple[RdkProducer, dict[str, Any], Generation]:
        """A librdkafka producer from the properties, whose fatal errors are noted for the
        poller (which replaces it), and its generation."""
        generation = Generation()
        props = dict(self._raw_properties)
        user_cb = props.get("error_cb")
        log = self.log

        def on_error(err: KafkaError) -> None:
            self._auth.record(err)
            log_client_error(log, "producer", err)
            if err.fatal():
                self._note_fatal(generation, err)
            if callable(user_cb):
                user_cb(err)

        props["error_cb"] = on_error
        client, masked = open_producer(props, log)
        return client, masked, generation

    def _note_fatal(self, generation: Generation, err: KafkaError) -> None:
        """A fatal error of ``generation``'s producer (from error_cb, or raised by its poll):
        the poller replaces it; when a send already did (it only saw the generic ``_FATAL``),
        ``err`` becomes the cause its messages are reported with."""
        if generation.fatal is not None:
            if generation.fatal.code() == KafkaError._FATAL:
                generation.fatal = err
        else:
            self._fatal_pending = (generation, err)

    def replace_locked(self, generation: Generation, cause: KafkaError) -> None:
        """Replace the librdkafka producer of ``generation`` after the fatal ``cause`` (caller
        holds the lock; a no-op when it was already replaced). The old one is drained by the
        poller: its messages are reported with the cause."""
        if generation is not self.generation:
            return
        old = self.client
        self.client, _, self.generation = self._build()
        generation.fatal = cause
        self._last_hook = None
        self._retired.append((old, generation))
        PRODUCERS_REPLACED.add(1, {"messaging.system": SYSTEM, "error.type": cause.name()})
        self.log.error(
            "fatal producer error: replaced the librdkafka producer; its queued and in-flight "
            "messages are reported as failed with this cause",
            cause=cause.str(),
            code=cause.name(),
            undelivered=len(old),
        )

    def _drain_retired(self) -> None:
        """Fail every message left in replaced producers: each callback gets the fatal cause.

        The old producer is polled first (its own fatal error, when a send saw only the
        generic ``_FATAL``, names the real cause), then purged, then polled until it has reported
        every message (bounded: a poll of a fatal producer may raise instead of serving).
        """
        while self._retired:
            old, generation = self._retired.pop(0)
            self._serve(old, generation, 0)
            with contextlib.suppress(KafkaException):
                old.purge(in_flight=True, blocking=False)
            deadline = time.monotonic() + DRAIN_TIMEOUT_S
            while len(old) and time.monotonic() < deadline:
                self._serve(old, generation, POLL_INTERVAL_S)

    # ------------------------------------------------------------------ poller thread
    def _serve(self, client: RdkProducer, generation: Generation, timeout: float) -> None:
        """Poll ``client`` (serving its delivery reports and errors); a fatal error it raises
        is noted for ``generation``."""
        try:
            client.poll(timeout)
        except KafkaException as exc:
            fatal = fatal_of(exc)
            if fatal is not None:
                self._note_fatal(generation, fatal)
            elif not self._stop.is_set():
                self.log.exception("producer poll failed")
        except Exception:  # a callback bug must not kill delivery reporting
            if not self._stop.is_set():
                self.log.exception("producer poll failed")

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            with self.lock:  # the pair, consistently (a send may replace the producer)
                client, generation = self.client, self.generation
            self._serve(client, generation, POLL_INTERVAL_S)
            if self._auth.take_fresh():
                # The broker refused the credentials: fail what waits for a connection
                # (AuthenticationError in each delivery report) instead of letting it time
                # out after message.timeout.ms. Later sends try again.
                with contextlib.suppress(KafkaException):
                    client.purge(in_flight=False, blocking=False)
            pending = self._fatal_pending
            if pending is not None:
                with self.lock:
                    self._fatal_pending = None
                    if not self.closed:
                        self.replace_locked(*pending)
            if self._retired:
                self._drain_retired()
