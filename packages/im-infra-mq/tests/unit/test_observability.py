"""Metrics bookkeeping and trace-context propagation helpers, without a broker.

No global OpenTelemetry provider is installed here (the integration suite installs the metrics
SDK once per process); the instruments' callbacks are exercised directly.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from im_infra.mq._internal import metrics
from im_infra.mq._internal.tracing import extract_context, inject_headers


class FakeKafkaMessage:
    def __init__(self, topic: str, partition: int, offset: int, latency: float = 0.01) -> None:
        self._t, self._p, self._o, self._latency = topic, partition, offset, latency

    def topic(self) -> str:
        return self._t

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o

    def latency(self) -> float:
        return self._latency


def lag_by_partition(cm: metrics.ConsumerMetrics) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for o in cm.lag():
        assert o.attributes is not None
        out[str(o.attributes["messaging.destination.partition.id"])] = o.value
    return out


def test_consumer_lag_from_watermark_and_processed_offsets() -> None:
    highs = {("t", 0): 10, ("t", 1): 7}
    cm = metrics.ConsumerMetrics("g", lambda t, p: highs.get((t, p)))
    try:
        cm.assigned([("t", 0), ("t", 1), ("t", 2)])
        cm.polled([FakeKafkaMessage("t", 0, 3), FakeKafkaMessage("t", 0, 4)])
        # t/0: batch starts at 3; t/1: nothing received yet; t/2: no watermark yet.
        assert lag_by_partition(cm) == {"0": 7}
        cm.processed("t", 0, 2, 5)  # offsets 3 and 4 finished
        assert lag_by_partition(cm) == {"0": 5}
        cm.revoked([("t", 0)])
        assert lag_by_partition(cm) == {}
        assert cm.consumed_snapshot() == {("g", "t", 0): 2}
    finally:
        cm.close()


def test_a_partition_without_a_watermark_does_not_refresh_every_poll() -> None:
    """Not assigned (a manual assign): no watermark ever comes, so polls within the refresh
    interval do not rescan their batches for it."""
    cm = metrics.ConsumerMetrics("g", lambda t, p: None)
    try:
        cm.polled([FakeKafkaMessage("t", 0, 3)])  # the first poll refreshes
        cm.polled([FakeKafkaMessage("t", 1, 8)])  # within the interval: not rescanned
        assert cm.consumed_snapshot() == {("g", "t", 0): 0}
    finally:
        cm.close()


def test_closed_clients_keep_their_counts_in_the_totals() -> None:
    pm = metrics.ProducerMetrics()
    pm.delivered(FakeKafkaMessage("topic-a", 0, 0))
    pm.delivery_failed(FakeKafkaMessage("topic-a", 0, 1), "_MSG_TIMED_OUT")
    pm.failed("topic-a", "_QUEUE_FULL")

    def sent() -> dict[tuple[str, str | None], float]:
        out: dict[tuple[str, str | None], float] = {}
        for o in metrics._observe_sent(None):  # type: ignore[arg-type]
            attrs = o.attributes or {}
            if attrs.get("messaging.destination.name") == "topic-a":
                error = attrs.get("error.type")
                out[("topic-a", None if error is None else str(error))] = o.value
        return out

    expected = {
        ("topic-a", None): 1,
        ("topic-a", "_MSG_TIMED_OUT"): 1,
        ("topic-a", "_QUEUE_FULL"): 1,
    }
    assert sent() == expected
    pm.close()
    pm.close()  # idempotent
    assert sent() == expected


def test_traceparent_injected_only_with_an_active_span_and_extracted_back() -> None:
    assert inject_headers() is None
    tracer = TracerProvider().get_tracer("t")
    with tracer.start_as_current_span("s") as span:
        headers = inject_headers()
    assert headers is not None
    sc = span.get_span_context()
    assert headers["traceparent"].startswith(f"00-{sc.trace_id:032x}-{sc.span_id:016x}-")
    ctx = extract_context({k: v.encode() for k, v in headers.items()})
    assert ctx is not None
    token = otel_context.attach(ctx)
    try:
        remote = trace.get_current_span().get_span_context()
        assert (remote.trace_id, remote.span_id, remote.is_remote) == (
            sc.trace_id,
            sc.span_id,
            True,
        )
    finally:
        otel_context.detach(token)
    assert extract_context({"trace_id": b"x"}) is None


def test_no_op_tracer_adds_nothing() -> None:
    with trace.NoOpTracer().start_as_current_span("s"):
        assert inject_headers() is None
