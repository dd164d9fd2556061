"""Producer behaviour that needs no broker: nothing is ever dropped silently."""

from __future__ import annotations

import contextlib
import threading
from typing import Any

import confluent_kafka
import pytest
from confluent_kafka import KafkaError, KafkaException

from im_infra import clog
from im_infra.mq import DeliveryError, KafkaProducer, Message, MQError, ProducerClosedError
from im_infra.mq._internal.kafka_producer import RdkProducer
from im_infra.mq._internal.producer_core import with_trace
from im_infra.mq.producer import core_of

# A port nothing listens on: librdkafka keeps retrying, so messages stay queued.
UNREACHABLE = {"bootstrap.servers": "127.0.0.1:9", "client.id": "unit", "linger.ms": 0}


def test_close_reports_every_undelivered_message() -> None:
    producer = KafkaProducer(UNREACHABLE, close_timeout=0.2)
    results: list[MQError | None] = []
    lock = threading.Lock()

    def record(err: MQError | None) -> None:
        with lock:
            results.append(err)

    for i in range(50):
        producer.send(Message("t", key=str(i), value=b"x"), record)
    producer.close()
    assert len(results) == 50
    assert all(isinstance(e, DeliveryError) for e in results)
    codes = {e.code for e in results if isinstance(e, DeliveryError)}
    assert codes <= {"_PURGE_QUEUE", "_PURGE_INFLIGHT"}
    producer.close()  # idempotent


def test_send_after_close_raises() -> None:
    producer = KafkaProducer(UNREACHABLE, close_timeout=0.1)
    producer.close()
    with pytest.raises(ProducerClosedError):
        producer.send(Message("t", value=b"x"))


def test_trace_id_header_added_unless_present() -> None:
    producer = KafkaProducer(UNREACHABLE, close_timeout=0.1)
    core = core_of(producer)
    try:
        with clog.trace_context("t-123"):
            msg = Message("t", value=b"x", headers={"a": b"1"})
            headers, _ = core.prepare(msg, None)
            assert headers == {"a": b"1", "trace_id": b"t-123"}
            assert msg.headers == {"a": b"1"}  # the caller's message is not modified
            own, _ = core.prepare(Message("t", headers={"trace_id": b"mine"}), None)
            assert own == {"trace_id": b"mine"}
        none, _ = core.prepare(Message("t", value=b"x"), None)
        assert none is None
    finally:
        producer.close()


def test_bad_librdkafka_property_is_a_config_error() -> None:
    from im_infra.mq import ConfigError

    with pytest.raises(ConfigError, match="producer configuration"):
        KafkaProducer({**UNREACHABLE, "linger.ms": "soon"})


def test_delivery_hook_is_reused_while_callback_and_trace_repeat() -> None:
    producer = KafkaProducer(UNREACHABLE, close_timeout=0.1)
    try:

        def cb(err: MQError | None) -> None:
            pass

        def hook(callback: Any, trace_id: str | None = None) -> Any:
            with clog.trace_context(trace_id) if trace_id else contextlib.nullcontext():
                return core_of(producer).prepare(Message("t"), callback)[1]

        first = hook(cb)
        assert hook(cb) is first
        assert hook(cb, "t1") is not first
        assert hook(None) is not first
    finally:
        producer.close()


def test_full_local_queue_waits_then_raises_queue_full() -> None:
    from im_infra.mq import QueueFullError

    props = {**UNREACHABLE, "queue.buffering.max.messages": 5}
    producer = KafkaProducer(props, backpressure_timeout=0.3, close_timeout=0.1)
    errors: list[MQError | None] = []
    try:
        for _ in range(5):
            producer.send(Message("t", value=b"x"), errors.append)
        with pytest.raises(QueueFullError, match=r"stayed full for 0\.3s") as info:
            producer.send(Message("t", value=b"overflow"), errors.append)
        assert info.value.code == "_QUEUE_FULL"
        assert info.value.retriable
    finally:
        producer.close()
    assert len(errors) == 5  # the accepted ones are reported at close; the refused one is not


async def test_async_send_waits_out_a_full_queue_without_blocking_the_loop() -> None:
    import asyncio

    from im_infra.mq import AsyncKafkaProducer, QueueFullError

    props = {**UNREACHABLE, "queue.buffering.max.messages": 2}
    producer = AsyncKafkaProducer(KafkaProducer(props, backpressure_timeout=0.3, close_timeout=0))
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    task = asyncio.create_task(ticker())
    try:
        await producer.send(Message("t", value=b"1"))
        await producer.send(Message("t", value=b"2"))
        before = ticks
        with pytest.raises(QueueFullError):
            await producer.send(Message("t", value=b"3"))
        assert ticks > before  # the loop kept running during the back-pressure wait
    finally:
        task.cancel()
        await producer.close()


def test_send_batch_queues_every_message_with_its_callback() -> None:
    producer = KafkaProducer(UNREACHABLE, close_timeout=0.1)
    results: list[MQError | None] = []
    messages = (Message("t", key=str(i), value=b"x") for i in range(2500))  # > one chunk
    assert producer.send_batch(messages, results.append) == 2500
    assert results == []  # nothing can be delivered: all of them are in librdkafka's queue
    producer.close()
    assert len(results) == 2500  # each reported (purged at close), none dropped


def test_send_batch_into_a_full_queue_says_how_many_were_queued() -> None:
    from im_infra.mq import QueueFullError

    props = {**UNREACHABLE, "queue.buffering.max.messages": 5}
    producer = KafkaProducer(props, backpressure_timeout=0.3, close_timeout=0.1)
    errors: list[MQError | None] = []
    try:
        with pytest.raises(QueueFullError, match=r"stayed full for 0\.3s") as info:
            producer.send_batch([Message("t", value=b"x") for _ in range(8)], errors.append)
        assert info.value.queued == 5
    finally:
        producer.close()
    assert len(errors) == 5  # the queued ones are reported; the others were never sent


def test_send_batch_after_close_queues_nothing() -> None:
    producer = KafkaProducer(UNREACHABLE, close_timeout=0.1)
    producer.close()
    with pytest.raises(ProducerClosedError) as info:
        producer.send_batch([Message("t", value=b"x")])
    assert info.value.queued == 0


def test_send_batch_adds_the_trace_headers_without_overriding_the_callers() -> None:
    producer = KafkaProducer(UNREACHABLE, close_timeout=0.1)
    try:
        own = Message("t", headers={"trace_id": b"mine", "app": b"1"})
        plain = Message("t")
        with clog.trace_context("t-42"):
            tid, trace = core_of(producer).trace()

        assert tid == "t-42"
        assert with_trace(plain, trace) == {"trace_id": b"t-42"}
        assert with_trace(own, trace) == {"trace_id": b"mine", "app": b"1"}
        assert with_trace(plain, None) is None
    finally:
        producer.close()


class _FatalRdk:
    """Stands in for a librdkafka producer that hit a fatal error: produce raises _FATAL, poll
    raises the real cause (as confluent-kafka does), the purge reports the queued message."""

    def __init__(self, queued: Any) -> None:
        self.queued = queued  # (hook, kmsg) of one message queued before the error
        self.purged = False

    def produce(self, *args: Any) -> None:
        raise KafkaException(KafkaError(KafkaError._FATAL, "Local: Fatal error"))

    def poll(self, timeout: float) -> int:
        if not self.purged:
            raise KafkaException(
                KafkaError(KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER, "out of order", fatal=True)
            )
        if self.queued is not None:
            hook, kmsg = self.queued
            self.queued = None
            hook(KafkaError(KafkaError._PURGE_QUEUE), kmsg)
        return 0

    def purge(self, **kwargs: Any) -> None:
        self.purged = True

    def flush(self, timeout: float) -> int:
        return len(self)

    def __len__(self) -> int:
        return 0 if self.queued is None else 1


def test_send_after_a_fatal_error_replaces_the_client_and_reports_the_old_queue() -> None:
    producer = KafkaProducer(UNREACHABLE, close_timeout=0.1)
    reports: list[MQError | None] = []
    done = threading.Event()

    def record(err: MQError | None) -> None:
        reports.append(err)
        done.set()

    core = core_of(producer)
    hook = core.hook(record, None)
    kmsg = confluent_kafka.Message(topic="t", value=b"queued before the error")
    real, old_generation = core.client, core.generation
    fatal = RdkProducer(_FatalRdk((hook, kmsg)))
    with core.lock:
        core.client = fatal
    real.purge(in_flight=True, blocking=True)
    try:
        producer.send(Message("t", value=b"after"))  # no exception: sent by the replacement
        assert core.generation is not old_generation
        assert core.client is not fatal and core.client is not real
        assert done.wait(10), "the queued message was never reported"
        [err] = reports
        assert isinstance(err, DeliveryError)
        # The real cause, raised by the old client's poll, not the generic _FATAL of produce.
        assert err.code == "OUT_OF_ORDER_SEQUENCE_NUMBER"
        assert err.retriable
        assert "was replaced" in str(err)
    finally:
        producer.close()


@pytest.mark.parametrize(
    "cause",
    [KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER, KafkaError.UNKNOWN_PRODUCER_ID],
    ids=["OUT_OF_ORDER_SEQUENCE_NUMBER", "UNKNOWN_PRODUCER_ID"],
)
def test_a_message_refused_with_a_fatal_cause_is_reported_with_it(cause: int) -> None:
    """librdkafka fails the refused batch with the fatal error's code but without the fatal
    flag on that copy: the report still says the producer hit a fatal error and was replaced,
    and that sending again may succeed (not a plain, non-retriable delivery failure)."""
    producer = KafkaProducer(UNREACHABLE, close_timeout=0.1)
    reports: list[MQError | None] = []
    try:
        hook = core_of(producer).hook(reports.append, None)
        hook(KafkaError(cause, "refused"), confluent_kafka.Message(topic="t", value=b"x"))
    finally:
        producer.close()
    [err] = reports
    assert isinstance(err, DeliveryError)
    assert err.code == KafkaError(cause).name()
    assert err.retriable
    assert "fatal error" in str(err) and "was replaced" in str(err)
