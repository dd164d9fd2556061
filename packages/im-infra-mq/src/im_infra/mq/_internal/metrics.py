"""mq's OpenTelemetry instruments (API only: no-ops until the application installs an SDK).

Hot paths never call the SDK per message: with the SDK installed a single ``Counter.add``
costs several microseconds, as much as handling a whole message. Instead:

- sent and consumed messages are counted in plain per-client dicts (a dict update per message)
  and reported by *observable* counters whose callbacks sum them when the SDK collects; a closed
  client hands its totals to ``_retired`` so the counters never go down;
- the delivery latency (librdkafka's own send -> delivery-report time, ``Message.latency()``,
  so no clock is read per message) is recorded at most once per millisecond per producer;
  below 1000 deliveries/s every delivery is recorded, above that the histogram is a sample;
- consumer lag is an observable gauge: high watermark minus the next offset to process, per
  assigned partition. The consume loop itself refreshes the high watermarks from librdkafka's
  cache (no broker request; confluent-kafka's client cannot be queried from another thread
  while it polls) between batches, at most once per second unless a batch reaches past the
  known watermark; the next offset to process is the offset after the last finished message
  whose offset is stored (see the consumer: once per batch, at least every 100 ms), or the first
  offset of the batch in hand;
- rare events (callback errors, dead-lettered messages) use ordinary counters.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from opentelemetry.metrics import CallbackOptions, Observation

from im_infra.clog import telemetry

__all__ = [
    "CALLBACK_ERRORS",
    "DEAD_LETTERED",
    "DELIVERY_DURATION",
    "PRODUCERS_REPLACED",
    "ConsumerMetrics",
    "ProducerMetrics",
]

SYSTEM = "kafka"
#: Minimum seconds between two delivery-latency recordings of one producer.
LATENCY_SAMPLE_INTERVAL_S = 0.001
#: The semantic conventions' advisory buckets for messaging.client.operation.duration.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)

Attrs = dict[str, Any]
#: Seconds between two refreshes of a consumer's high watermarks.
WATERMARK_REFRESH_S = 1.0

PartitionKey = tuple[str, int]
#: A partition's cached high watermark (None if unknown); called from the consume loop.
HighWatermark = Callable[[str, int], int | None]


_meter = telemetry.meter("mq")
_monotonic = time.monotonic
_lock = threading.Lock()
_producers: dict[int, ProducerMetrics] = {}
_consumers: dict[int, ConsumerMetrics] = {}
_retired_sent: dict[tuple[str, str | None], int] = {}
_retired_consumed: dict[tuple[str, str, int], int] = {}


def _sent_attrs(topic: str, error_type: str | None) -> Attrs:
    attrs: Attrs = {
        "messaging.system": SYSTEM,
        "messaging.operation.name": "send",
        "messaging.destination.name": topic,
    }
    if error_type is not None:
        attrs["error.type"] = error_type
    return attrs


def _consumer_attrs(group: str, topic: str, partition: int) -> Attrs:
    return {
        "messaging.system": SYSTEM,
        "messaging.consumer.group.name": group,
        "messaging.destination.name": topic,
        "messaging.destination.partition.id": str(partition),
    }


def _merge(into: dict[Any, int], counts: dict[Any, int]) -> None:
    for key, n in counts.items():
        into[key] = into.get(key, 0) + n


def _observe_counts(
    retired: dict[Any, int],
    live: Callable[[], list[Callable[[], dict[Any, int]]]],
    attrs: Callable[..., Attrs],
) -> list[Observation]:
    """Retired totals plus every live client's snapshot, one observation per key."""
    with _lock:
        total = dict(retired)
        snapshots = live()
    for snapshot in snapshots:
        _merge(total, snapshot())
    return [Observation(n, attrs(*key)) for key, n in total.items()]


def _observe_sent(_options: CallbackOptions) -> Iterable[Observation]:
    return _observe_counts(
        _retired_sent, lambda: [p.snapshot for p in _producers.values()], _sent_attrs
    )


def _observe_consumed(_options: CallbackOptions) -> Iterable[Observation]:
    return _observe_counts(
        _retired_consumed,
        lambda: [c.consumed_snapshot for c in _consumers.values()],
        _consumer_attrs,
    )


def _observe_lag(_options: CallbackOptions) -> Iterable[Observation]:
    with _lock:
        live = list(_consumers.values())
    return [obs for consumer in live for obs in consumer.lag()]


_meter.create_observable_counter(
    "messaging.client.sent.messages",
    callbacks=[_observe_sent],
    unit="{message}",
    description="Messages the producer handed to Kafka, by delivery outcome "
    "(error.type is set on the failed ones).",
)
DELIVERY_DURATION = _meter.create_histogram(
    "messaging.client.operation.duration",
    unit="s",
    description="Time from send to the broker's delivery report (sampled: at most one "
    "recording per millisecond per producer).",
    explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS),
)
_meter.create_observable_counter(
    "messaging.client.consumed.messages",
    callbacks=[_observe_consumed],
    unit="{message}",
    description="Messages the consumer handed to the application and finished with.",
)
_meter.create_observable_gauge(
    "im_infra.mq.consumer.lag",
    callbacks=[_observe_lag],
    unit="{message}",
    description="Messages in an assigned partition not processed yet (high watermark minus "
    "the next offset to process).",
)
CALLBACK_ERRORS = _meter.create_counter(
    "im_infra.mq.callback.errors",
    unit="{error}",
    description="Exceptions raised by application callbacks (consume or delivery).",
)
PRODUCERS_REPLACED = _meter.create_counter(
    "im_infra.mq.producer.replaced",
    unit="{producer}",
    description="librdkafka producers replaced after a fatal error (error.type = its name); "
    "their queued and in-flight messages were reported failed with that cause.",
)
DEAD_LETTERED = _meter.create_counter(
    "im_infra.mq.consumer.dead_lettered",
    unit="{message}",
    description="Messages written to the dead-letter topic after their last failed attempt "
    "(error.type is set when writing to the dead-letter topic failed).",
)

RETRIED = _meter.create_counter(
    "im_infra.mq.consumer.retried",
    unit="{message}",
    description="Failed messages written to a retry topic (im_infra.mq.retry.delay_ms: the "
    "topic's delay; error.type is set when writing to it failed).",
)


class ProducerMetrics:
    """One producer's delivery counts and latency sampling.

    Delivery reports are served by the poller thread and by whoever calls ``flush``, so each
    thread counts in its own dicts (no lock per message); a snapshot sums them all. Successes are
    counted by topic alone (a string key hashes once), failures by (topic, error type).
    """

    __slots__ = ("__weakref__", "_dicts", "_local", "_lock", "_next_sample")

    def __init__(self) -> None:
        self._local = threading.local()
        #: Per thread: (delivered by topic, failed by (topic, error type)).
        self._dicts: list[tuple[dict[str, int], dict[tuple[str, str], int]]] = []
        self._lock = threading.Lock()
        self._next_sample = 0.0
        with _lock:
            _producers[id(self)] = self

    def _counts(self) -> tuple[dict[str, int], dict[tuple[str, str], int]]:
        try:
            counts: tuple[dict[str, int], dict[tuple[str, str], int]] = self._local.counts
        except AttributeError:
            counts = self._local.counts = ({}, {})
            with self._lock:
                self._dicts.append(counts)
        return counts

    def delivered(self, kmsg: Any) -> None:
        """A successful delivery report (the hot path: one per message)."""
        try:
            ok: dict[str, int] = self._local.counts[0]
        except AttributeError:
            ok = self._counts()[0]
        topic = kmsg.topic()
        ok[topic] = ok.get(topic, 0) + 1
        now = _monotonic()
        if now >= self._next_sample:
            self._sample(now, kmsg, topic, None)

    def delivery_failed(self, kmsg: Any, error_type: str) -> None:
        """A failed delivery report."""
        topic = kmsg.topic()
        self.failed(topic, error_type)
        self._sample(_monotonic(), kmsg, topic, error_type)

    def _sample(self, now: float, kmsg: Any, topic: str, error_type: str | None) -> None:
        self._next_sample = now + LATENCY_SAMPLE_INTERVAL_S
        latency = kmsg.latency()
        if latency is not None:
            DELIVERY_DURATION.record(latency, _sent_attrs(topic, error_type))

    def failed(self, topic: str, error_type: str) -> None:
        """A message that failed: a delivery report, or refused at send time (no report)."""
        failed = self._counts()[1]
        key = (topic, error_type)
        failed[key] = failed.get(key, 0) + 1

    def delivery_callback_error(self, exc: BaseException) -> None:
        CALLBACK_ERRORS.add(1, {"im_infra.mq.callback": "delivery", "error.type": _name(exc)})

    def snapshot(self) -> dict[tuple[str, str | None], int]:
        with self._lock:
            dicts = list(self._dicts)
        total: dict[tuple[str, str | None], int] = {}
        for ok, failed in dicts:
            _merge(total, {(topic, None): n for topic, n in dict(ok).items()})  # dict() copies
            _merge(total, dict(failed))  # atomically under the GIL
        return total

    def close(self) -> None:
        """Keep this producer's counts in the totals and stop observing it. Idempotent."""
        with _lock:
            if _producers.pop(id(self), None) is not None:
                _merge(_retired_sent, self.snapshot())


class ConsumerMetrics:
    """One consumer's processed counts and positions, and its lag.

    ``processed`` is called by the consume loop only (one writer); readers copy under the GIL.
    """

    __slots__ = (
        "__weakref__",
        "_assigned",
        "_group",
        "_high",
        "_high_watermark",
        "_next_refresh",
        "_parts",
    )

    def __init__(self, group: str, high_watermark: HighWatermark) -> None:
        self._group = group
        self._high_watermark = high_watermark
        #: (topic, partition) -> [messages processed, next offset to process or -1]
        self._parts: dict[PartitionKey, list[int]] = {}
        self._assigned: frozenset[PartitionKey] = frozenset()
        self._high: dict[PartitionKey, int] = {}
        self._next_refresh = 0.0
        with _lock:
            _consumers[id(self)] = self

    def processed(self, topic: str, partition: int, count: int, next_offset: int) -> None:
        """The application finished ``count`` more messages of a partition, up to just before
        ``next_offset`` (their offsets are stored)."""
        state = self._parts.get((topic, partition))
        if state is None:
            self._parts[(topic, partition)] = [count, next_offset]
        else:
            state[0] += count
            state[1] = next_offset

    def polled(self, batch: Sequence[Any]) -> None:
        """Called by the consume loop after each poll (``batch``: the messages in hand)."""
        now = time.monotonic()
        if now < self._next_refresh and not (batch and self._beyond_high(batch[-1])):
            return
        self._next_refresh = now + WATERMARK_REFRESH_S
        parts = self._parts
        for kmsg in batch:  # partitions new since their assignment: start at the batch
            key = (kmsg.topic(), kmsg.partition())
            state = parts.get(key)
            if state is None:
                parts[key] = [0, kmsg.offset()]
            elif state[1] < 0:
                state[1] = kmsg.offset()
        high: dict[PartitionKey, int] = {}
        for topic, partition in self._assigned:
            offset = self._high_watermark(topic, partition)
            if offset is not None:
                high[(topic, partition)] = offset
        self._high = high
        if len(high) < len(self._assigned):
            self._next_refresh = 0.0  # a partition not fetched yet: look again next poll

    def _beyond_high(self, kmsg: Any) -> bool:
        """Whether a message lies at or past its partition's known high watermark (stale).

        A partition without one is not: an assigned one is looked up at every poll anyway
        (:meth:`polled`), and one not assigned (a manual ``assign``) never gets one, so
        refreshing for it would rescan every batch for nothing (~400 CPU instructions per message).
        """
        high = self._high.get((kmsg.topic(), kmsg.partition()))
        return high is not None and bool(kmsg.offset() >= high)

    def assigned(self, partitions: Iterable[PartitionKey]) -> None:
        self._assigned = self._assigned | frozenset(partitions)
        self._next_refresh = 0.0

    def revoked(self, partitions: Iterable[tuple[str, int]]) -> None:
        gone = frozenset(partitions)
        self._assigned = self._assigned - gone
        self._next_refresh = 0.0
        for key in gone:
            state = self._parts.get(key)
            if state is not None:
                state[1] = -1  # the next owner's progress is not ours to report

    def callback_error(self, topic: str, exc: BaseException) -> None:
        CALLBACK_ERRORS.add(
            1,
            {
                "im_infra.mq.callback": "consume",
                "messaging.consumer.group.name": self._group,
                "messaging.destination.name": topic,
                "error.type": _name(exc),
            },
        )

    def dead_lettered(self, topic: str, error: BaseException | None) -> None:
        attrs: Attrs = {
            "messaging.system": SYSTEM,
            "messaging.consumer.group.name": self._group,
            "messaging.destination.name": topic,
        }
        if error is not None:
            attrs["error.type"] = _name(error)
        DEAD_LETTERED.add(1, attrs)

    def retried(self, topic: str, delay_ms: int, error: BaseException | None) -> None:
        attrs: Attrs = {
            "messaging.system": SYSTEM,
            "messaging.consumer.group.name": self._group,
            "messaging.destination.name": topic,
            "im_infra.mq.retry.delay_ms": delay_ms,
        }
        if error is not None:
            attrs["error.type"] = _name(error)
        RETRIED.add(1, attrs)

    def consumed_snapshot(self) -> dict[tuple[str, str, int], int]:
        return {(self._group, t, p): state[0] for (t, p), state in list(self._parts.items())}

    def lag(self) -> list[Observation]:
        high = self._high
        out = []
        for key in sorted(self._assigned):
            state = self._parts.get(key)
            top = high.get(key)
            if state is None or state[1] < 0 or top is None:
                continue  # not known yet
            out.append(Observation(max(top - state[1], 0), _consumer_attrs(self._group, *key)))
        return out

    def close(self) -> None:
        """Keep this consumer's counts in the totals and stop observing it. Idempotent."""
        self._assigned = frozenset()
        with _lock:
            if _consumers.pop(id(self), None) is not None:
                _merge(_retired_consumed, self.consumed_snapshot())


def _name(exc: BaseException) -> str:
    return type(exc).__qualname__
