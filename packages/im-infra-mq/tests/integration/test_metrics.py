"""mq's metrics and trace propagation against the stack broker, read through the OpenTelemetry
SDK (metrics: the session's in-memory reader; traces: a local TracerProvider with an in-memory
span exporter)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from im_infra import clog, mq

pytestmark = pytest.mark.integration

SENT = "messaging.client.sent.messages"
DURATION = "messaging.client.operation.duration"
CONSUMED = "messaging.client.consumed.messages"
LAG = "im_infra.mq.consumer.lag"
CALLBACK_ERRORS = "im_infra.mq.callback.errors"
DLQ = "im_infra.mq.consumer.dead_lettered"
RETRIED = "im_infra.mq.consumer.retried"


def dest(topic: str, **more: Any) -> dict[str, Any]:
    return {"messaging.destination.name": topic, **more}


def test_sent_messages_and_delivery_latency(
    kafka_brokers: str, make_topic: Any, metrics_probe: Any, h: Any
) -> None:
    topic = make_topic("m-sent")
    ok = dest(topic, **{"error.type": None, "messaging.operation.name": "send"})
    sent0, lat0 = metrics_probe.value(SENT, **ok), metrics_probe.count(DURATION, **ok)
    with mq.new_producer("mq-it", **h.overrides(kafka_brokers)) as producer:
        # send_sync waits for each report, so the reports are > 1 ms apart: all are recorded.
        for i in range(5):
            producer.send_sync(mq.Message(topic, key=b"k", value=f"v{i}".encode()))
        done = threading.Event()
        for i in range(20):
            producer.send(mq.Message(topic, value=f"w{i}".encode()), None)
        producer.send(mq.Message(topic, value=b"last"), lambda err: done.set())
        assert done.wait(30)
    assert metrics_probe.value(SENT, **ok) - sent0 == 26
    recorded = metrics_probe.count(DURATION, **ok) - lat0
    assert 5 <= recorded <= 26  # the burst of 21 is sampled (at most one per millisecond)
    (point,) = metrics_probe.points(DURATION, **ok)
    assert point.sum > 0 and point.max < 30
    assert point.attributes["messaging.system"] == "kafka"


def test_failed_sends_are_counted_by_error_type(
    kafka_brokers: str, make_topic: Any, metrics_probe: Any, h: Any
) -> None:
    topic = make_topic("m-fail")
    with mq.new_producer("mq-it", **h.overrides(kafka_brokers)) as producer:
        # Refused at send time by librdkafka (message.max.bytes is 1 MB by default).
        too_big = dest(topic, **{"error.type": "MSG_SIZE_TOO_LARGE"})
        before = metrics_probe.value(SENT, **too_big)
        with pytest.raises(mq.DeliveryError) as refused:
            producer.send(mq.Message(topic, value=b"x" * 2_000_000))
        assert refused.value.code == "MSG_SIZE_TOO_LARGE"
        assert metrics_probe.value(SENT, **too_big) - before == 1
        # Failed in the delivery report (or at send time, depending on metadata): a partition
        # the topic does not have.
        with pytest.raises(mq.DeliveryError) as unknown:
            producer.send_sync(mq.Message(topic, value=b"y", partition=7), timeout=30)
        code = unknown.value.code
        assert code is not None and "PARTITION" in code
        assert metrics_probe.value(SENT, **dest(topic, **{"error.type": code})) == 1
        assert metrics_probe.value(SENT, **dest(topic, **{"error.type": None})) == 0


def test_consumed_messages_lag_and_callback_errors(
    kafka_brokers: str, make_topic: Any, metrics_probe: Any, h: Any
) -> None:
    topic = make_topic("m-lag")
    group = h.unique("g")
    at = dest(topic, **{"messaging.consumer.group.name": group})
    p0 = {**at, "messaging.destination.partition.id": "0"}
    blocked, release = threading.Event(), threading.Event()

    def handle(msg: mq.Message) -> None:
        if msg.offset == 4:
            blocked.set()
            assert release.wait(30)
        if msg.value == b"m7":
            raise ValueError("bad message")

    consumer = mq.new_consumer("mq-it", group, **h.overrides(kafka_brokers))
    thread = h.run_in_thread(consumer, [topic], handle)
    try:
        # Counts and lag follow the *stored* offsets: a batch's finished messages are stored
        # when it ends (or every 100 ms). Offsets 0..3 in a first batch, finished and stored:
        h.produce(kafka_brokers, topic, [f"m{i}".encode() for i in range(4)])
        h.wait_for(lambda: metrics_probe.value(CONSUMED, **p0) == 4, 30, "4 consumed")
        h.wait_for(lambda: metrics_probe.value(LAG, **p0) == 0, 30, "no lag")
        time.sleep(1.1)  # the loop refreshes high watermarks at most once a second
        h.produce(kafka_brokers, topic, [f"m{i}".encode() for i in range(4, 10)])
        assert blocked.wait(30)
        # Offset 4 in hand: 6 of 10 left.
        h.wait_for(lambda: metrics_probe.value(LAG, **p0) == 6, 30, "lag 6")
        assert metrics_probe.value(CONSUMED, **p0) == 4
        release.set()
        h.wait_for(lambda: metrics_probe.value(CONSUMED, **p0) == 10, 30, "all consumed")
        assert metrics_probe.value(LAG, **p0) == 0
        errors = {**at, "error.type": "ValueError", "im_infra.mq.callback": "consume"}
        assert metrics_probe.value(CALLBACK_ERRORS, **errors) == 1
    finally:
        release.set()
        consumer.close()
        h.join_or_raise(thread)
    # Closed: the count stays (a counter never goes down); the lag is no longer reported.
    assert metrics_probe.value(CONSUMED, **p0) == 10
    assert metrics_probe.points(LAG, **p0) == []


def test_lag_counts_the_batch_in_hand_from_its_first_offset(
    kafka_brokers: str, make_topic: Any, metrics_probe: Any, h: Any
) -> None:
    topic = make_topic("m-lag2", partitions=2)
    group = h.unique("g")
    # Five messages in partition 0, three in partition 1; a first member processes them all
    # and commits, then three more arrive in partition 1.
    with mq.new_producer("mq-it", **h.overrides(kafka_brokers)) as producer:
        for i in range(8):
            producer.send(mq.Message(topic, value=b"a", partition=0 if i < 5 else 1))
        assert producer.flush(30) == 0
    first = h.Collector()
    consumer = mq.new_consumer("mq-it", group, **h.overrides(kafka_brokers))
    thread = h.run_in_thread(consumer, [topic], first)
    h.wait_for(lambda: first.count() == 8, 30, "8 messages")
    consumer.close()
    h.join_or_raise(thread)
    with mq.new_producer("mq-it", **h.overrides(kafka_brokers)) as producer:
        for _ in range(3):
            producer.send(mq.Message(topic, value=b"b", partition=1))
        assert producer.flush(30) == 0
    # The second member blocks on the first new message of partition 1 (offset 3): 6 messages,
    # 3 not processed. Partition 0 has had no message since the assignment: not reported yet.
    started = threading.Event()
    release = threading.Event()

    def block(msg: mq.Message) -> None:
        started.set()
        assert release.wait(30)

    second = mq.new_consumer("mq-it", group, **h.overrides(kafka_brokers))
    thread = h.run_in_thread(second, [topic], block)
    p = dest(topic, **{"messaging.consumer.group.name": group})
    try:
        assert started.wait(30)

        def lag() -> dict[str, float]:
            return {
                pt.attributes["messaging.destination.partition.id"]: pt.value
                for pt in metrics_probe.points(LAG, **p)
            }

        assert lag() == {"1": 3}
    finally:
        release.set()
        second.close()
        h.join_or_raise(thread)


def test_dead_lettered_messages_are_counted(
    kafka_brokers: str, make_topic: Any, metrics_probe: Any, h: Any
) -> None:
    topic = make_topic("m-dlq")
    group = h.unique("g")
    h.produce(kafka_brokers, topic, [b"ok", b"poison", b"ok"])
    seen = h.Collector()

    def handle(msg: mq.Message) -> None:
        seen(msg)
        if msg.value == b"poison":
            raise RuntimeError("cannot handle")

    policy = mq.RetryPolicy(max_attempts=2, backoff=0.01, dead_letter=True)
    consumer = mq.new_consumer("mq-it", group, retry=policy, **h.overrides(kafka_brokers))
    thread = h.run_in_thread(consumer, [topic], handle)
    at = dest(topic, **{"messaging.consumer.group.name": group})
    try:
        h.wait_for(lambda: metrics_probe.value(CONSUMED, **at) == 3, 30, "3 consumed")
        assert metrics_probe.value(DLQ, **at, **{"error.type": None}) == 1
        assert metrics_probe.value(CALLBACK_ERRORS, **at) == 2  # both attempts
        assert seen.count() == 4
    finally:
        consumer.close()
        h.join_or_raise(thread)


def test_retried_messages_are_counted_by_delay(
    kafka_brokers: str, make_topic: Any, metrics_probe: Any, h: Any
) -> None:
    topic = make_topic("m-retry")
    group = h.unique("g")
    h.produce(kafka_brokers, topic, [b"poison"])
    seen = h.Collector()

    def handle(msg: mq.Message) -> None:
        seen(msg)
        raise RuntimeError("cannot handle")

    cfg = h.overrides(kafka_brokers, retryTopics={"delaysMs": [100, 200]})
    consumer = mq.new_consumer("mq-it", group, **cfg)
    thread = h.run_in_thread(consumer, [topic], handle)
    first = {"messaging.consumer.group.name": group, "error.type": None}
    try:
        h.wait_for(lambda: metrics_probe.value(DLQ, **first) == 1, 30, "the dead letter")
        assert metrics_probe.value(RETRIED, **dest(topic, **first)) == 1
        retry_topic = mq.retry_topic(topic, 100)
        assert metrics_probe.value(RETRIED, **dest(retry_topic, **first)) == 1
        assert (
            metrics_probe.value(RETRIED, **dest(topic, **{"im_infra.mq.retry.delay_ms": 100})) == 1
        )
        assert metrics_probe.value(DLQ, **dest(mq.retry_topic(topic, 200), **first)) == 1
        assert seen.count() == 3
    finally:
        consumer.close()
        h.join_or_raise(thread)


class Tracing:
    """A real SDK tracer (a local provider: the global one is left alone) and its spans."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = provider.get_tracer("mq-it")


def test_traceparent_propagates_from_producer_span_to_consumer_spans(
    kafka_brokers: str, make_topic: Any, logs: Any, h: Any
) -> None:
    tracing = Tracing()
    tracer, exporter = tracing.tracer, tracing.exporter
    topic = make_topic("m-trace")
    with (
        mq.new_producer("mq-it", **h.overrides(kafka_brokers)) as producer,
        tracer.start_as_current_span("publish") as parent,
    ):
        producer.send_sync(mq.Message(topic, value=b"traced"))
        producer.send_sync(mq.Message(topic, value=b"own", headers={"traceparent": b"caller-set"}))
    parent_ctx = parent.get_span_context()
    trace_hex = format(parent_ctx.trace_id, "032x")

    seen: list[tuple[mq.Message, str | None]] = []

    def handle(msg: mq.Message) -> None:
        with tracer.start_as_current_span("handle"):
            clog.get_logger("handler").info("handling", value=msg.value)
            seen.append((msg, clog.trace_id()))

    consumer = mq.new_consumer("mq-it", h.unique("g"), **h.overrides(kafka_brokers))
    thread = h.run_in_thread(consumer, [topic], handle)
    h.wait_for(lambda: len(seen) == 2, 30, "two messages")
    consumer.close()
    h.join_or_raise(thread)

    (traced, tid), (own, _) = seen
    assert traced.headers["traceparent"].decode().split("-")[1] == trace_hex
    assert traced.trace_id == trace_hex == tid  # clog's trace_id header is the span's
    assert own.headers["traceparent"] == b"caller-set"  # never overwritten
    handled = [s for s in exporter.get_finished_spans() if s.name == "handle"]
    assert len(handled) == 2
    child = handled[0]
    assert child.parent is not None and child.parent.span_id == parent_ctx.span_id
    assert child.context.trace_id == parent_ctx.trace_id
    line = next(r for r in logs.records() if r.get("msg") == "handling")
    assert line["trace_id"] == trace_hex
    assert line["span_id"] == format(child.context.span_id, "016x")


def test_without_a_span_no_traceparent_is_added(
    kafka_brokers: str, make_topic: Any, h: Any
) -> None:
    topic = make_topic("m-notrace")
    with mq.new_producer("mq-it", **h.overrides(kafka_brokers)) as producer:
        with clog.trace_context("plain-id"):
            producer.send_sync(mq.Message(topic, value=b"a"))
        producer.send_sync(mq.Message(topic, value=b"b"))
    seen = h.Collector()
    consumer = mq.new_consumer("mq-it", h.unique("g"), **h.overrides(kafka_brokers))
    thread = h.run_in_thread(consumer, [topic], seen)
    h.wait_for(lambda: seen.count() == 2, 30, "two messages")
    consumer.close()
    h.join_or_raise(thread)
    a, b = seen.messages
    assert a.headers == {"trace_id": b"plain-id"} and seen.trace_ids[0] == "plain-id"
    assert b.headers == {} and seen.trace_ids[1] is None


UNREACHABLE = {"bootstrap.servers": "127.0.0.1:1", "reconnect.backoff.ms": 100}


@pytest.mark.parametrize("role", ["producer", "consumer", "admin"])
def test_librdkafka_log_lines_go_through_clog(
    role: str, logs: Any, capfd: pytest.CaptureFixture[str], h: Any
) -> None:
    """An unreachable broker makes librdkafka log connection failures: they arrive as clog JSON
    lines (namespace im_infra.mq.librdkafka.<role>), and no raw %3|... line reaches stderr."""
    namespace = f"im_infra.mq.librdkafka.{role}"

    def forwarded() -> bool:
        return any(r.get("namespace") == namespace for r in logs.records())

    if role == "producer":
        with mq.KafkaProducer(UNREACHABLE, close_timeout=0.5):
            h.wait_for(forwarded, 15, "a librdkafka line from the producer")
    elif role == "consumer":
        consumer = mq.KafkaConsumer({**UNREACHABLE, "group.id": h.unique("g")}, close_timeout=5)
        thread = h.run_in_thread(consumer, ["mqit-unreachable"], lambda msg: None)
        try:
            h.wait_for(forwarded, 15, "a librdkafka line from the consumer")
        finally:
            consumer.close()
            thread.join(15)
    else:
        admin = mq.KafkaAdminClient(UNREACHABLE, timeout=1.0)
        with pytest.raises(mq.AdminError):
            admin.list_topics()
        admin.close()
        admin.close()  # idempotent
        assert forwarded(), "no librdkafka line from the admin client reached clog"
    err = capfd.readouterr().err
    assert "|FAIL|" not in err and "%3|" not in err, err[-500:]


async def test_async_producer_and_consumer_propagate_traceparent(
    kafka_brokers: str, make_topic: Any, h: Any
) -> None:
    tracing = Tracing()
    tracer, exporter = tracing.tracer, tracing.exporter
    topic = make_topic("m-atrace")
    async with mq.new_async_producer("mq-it", **h.overrides(kafka_brokers)) as producer:
        with tracer.start_as_current_span("publish") as parent:
            await producer.send_sync(mq.Message(topic, value=b"traced"))

    handled = asyncio.Event()

    async def handle(msg: mq.Message) -> None:
        with tracer.start_as_current_span("handle"):
            await asyncio.sleep(0)
        handled.set()

    consumer = mq.new_async_consumer("mq-it", h.unique("g"), **h.overrides(kafka_brokers))
    task = asyncio.create_task(consumer.subscribe([topic], handle))
    try:
        await asyncio.wait_for(handled.wait(), 30)
    finally:
        await consumer.close()
        await asyncio.wait_for(task, 30)
    (child,) = [s for s in exporter.get_finished_spans() if s.name == "handle"]
    assert child.parent is not None
    assert child.parent.span_id == parent.get_span_context().span_id
    assert child.context.trace_id == parent.get_span_context().trace_id
