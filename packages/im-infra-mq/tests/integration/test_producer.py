"""Producer on the stack broker: delivery reports, send_sync, headers, trace id, close."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from im_infra import clog, mq

pytestmark = pytest.mark.integration


def test_send_callbacks_and_send_sync_roundtrip(
    kafka_brokers: str, make_topic: Any, h: Any
) -> None:
    topic = make_topic("roundtrip", 2)
    results: list[mq.MQError | None] = []
    lock = threading.Lock()

    def record(err: mq.MQError | None) -> None:
        with lock:
            results.append(err)

    with mq.new_producer("mq-it", common={"brokers": [kafka_brokers]}) as producer:
        for i in range(200):
            producer.send(mq.Message(topic, key=f"u{i % 7}", value=f"v{i}"), record)
        producer.send_sync(
            mq.Message(topic, key=b"sync", value=b"last", headers={"app": b"x", "trace_id": b"t1"})
        )
        assert producer.flush(30) == 0
    assert len(results) == 200
    assert results == [None] * 200

    consumer = mq.new_consumer("mq-it", h.unique("g"), **h.overrides(kafka_brokers))
    got = h.Collector()
    thread = h.run_in_thread(consumer, [topic], got)
    h.wait_for(lambda: got.count() >= 201, 30, "201 messages")
    consumer.close()
    h.join_or_raise(thread)

    by_value = {m.value: m for m in got.messages}
    assert set(by_value) == {f"v{i}".encode() for i in range(200)} | {b"last"}
    last = by_value[b"last"]
    assert last.key == b"sync"
    assert last.headers == {"app": b"x", "trace_id": b"t1"}
    assert last.partition in (0, 1)
    assert last.offset is not None
    assert last.timestamp_ms is not None
    # Same key, same partition.
    parts: dict[bytes | str | None, set[int | None]] = {}
    for m in got.messages:
        parts.setdefault(m.key, set()).add(m.partition)
    assert all(len(p) == 1 for p in parts.values())


def test_trace_id_is_copied_into_the_header(kafka_brokers: str, make_topic: Any, h: Any) -> None:
    topic = make_topic("trace")
    with mq.new_producer("mq-it", common={"brokers": [kafka_brokers]}) as producer:
        with clog.trace_context("producer-trace-1"):
            producer.send_sync(mq.Message(topic, value=b"a"))
        producer.send_sync(mq.Message(topic, value=b"b"))  # no trace bound: no header
    consumer = mq.new_consumer("mq-it", h.unique("g"), **h.overrides(kafka_brokers))
    got = h.Collector()
    thread = h.run_in_thread(consumer, [topic], got)
    h.wait_for(lambda: got.count() >= 2, 30, "2 messages")
    consumer.close()
    h.join_or_raise(thread)
    headers = {m.value: m.headers for m in got.messages}
    assert headers[b"a"] == {"trace_id": b"producer-trace-1"}
    assert headers[b"b"] == {}
    assert got.trace_ids == ["producer-trace-1", None]


def test_delivery_callback_runs_with_the_senders_trace_id(
    kafka_brokers: str, make_topic: Any
) -> None:
    topic = make_topic("cbtrace")
    seen: list[str | None] = []
    done = threading.Event()

    def callback(err: mq.MQError | None) -> None:
        seen.append(clog.trace_id())
        done.set()

    with mq.new_producer("mq-it", common={"brokers": [kafka_brokers]}) as producer:
        with clog.trace_context("cb-trace"):
            producer.send(mq.Message(topic, value=b"x"), callback)
        assert done.wait(30)
    assert seen == ["cb-trace"]


def test_send_sync_to_unknown_partition_raises_delivery_error(
    kafka_brokers: str, make_topic: Any
) -> None:
    topic = make_topic("badpart", 1)
    with mq.new_producer("mq-it", common={"brokers": [kafka_brokers]}) as producer:
        producer.send_sync(mq.Message(topic, value=b"ok"))  # metadata known now
        with pytest.raises(mq.DeliveryError) as info:
            producer.send_sync(mq.Message(topic, value=b"x", partition=7), timeout=30)
        assert info.value.code is not None
        assert topic in str(info.value)


def test_callback_exception_does_not_stop_delivery_reports(
    kafka_brokers: str, make_topic: Any, logs: Any
) -> None:
    topic = make_topic("cbraise")
    ok: list[mq.MQError | None] = []

    def bad(err: mq.MQError | None) -> None:
        raise RuntimeError("user bug")

    with mq.new_producer("mq-it", common={"brokers": [kafka_brokers]}) as producer:
        producer.send(mq.Message(topic, value=b"1"), bad)
        producer.send(mq.Message(topic, value=b"2"), ok.append)
        assert producer.flush(30) == 0
    assert ok == [None]
    assert any(r["msg"] == "delivery callback raised" for r in logs.records())


def test_closed_producer_refuses_messages(kafka_brokers: str) -> None:
    producer = mq.new_producer("mq-it", common={"brokers": [kafka_brokers]})
    producer.close()
    producer.close()
    with pytest.raises(mq.ProducerClosedError):
        producer.send_sync(mq.Message("t", value=b"x"))
    assert isinstance(producer, mq.Producer)


def test_send_sync_inside_a_delivery_callback_fails_fast(
    kafka_brokers: str, make_topic: Any
) -> None:
    topic = make_topic("reentrant")
    outcome: list[BaseException | None] = []
    done = threading.Event()
    with mq.new_producer("mq-it", common={"brokers": [kafka_brokers]}) as producer:

        def callback(err: mq.MQError | None) -> None:
            try:
                producer.send_sync(mq.Message(topic, value=b"inner"))
                outcome.append(None)
            except mq.MQError as exc:
                outcome.append(exc)
            done.set()

        producer.send(mq.Message(topic, value=b"outer"), callback)
        assert done.wait(30)
    assert isinstance(outcome[0], mq.MQError)
    assert "delivery callback" in str(outcome[0])


def test_send_batch_delivers_every_message_with_trace_and_own_headers(
    kafka_brokers: str, make_topic: Any, h: Any
) -> None:
    topic = make_topic("batch", 2)
    results: list[mq.MQError | None] = []
    lock = threading.Lock()

    def record(err: mq.MQError | None) -> None:
        with lock:
            results.append(err)

    messages = [mq.Message(topic, key=f"u{i % 5}", value=f"b{i}") for i in range(2300)]
    messages[7] = mq.Message(topic, key="u2", value="b7", headers={"app": b"x"})
    with mq.new_producer("mq-it", common={"brokers": [kafka_brokers]}) as producer:
        with clog.trace_context("batch-trace"):
            assert producer.send_batch(iter(messages), record) == 2300
        assert producer.flush(30) == 0
    assert results == [None] * 2300

    consumer = mq.new_consumer("mq-it", h.unique("g"), **h.overrides(kafka_brokers))
    got = h.Collector()
    thread = h.run_in_thread(consumer, [topic], got)
    h.wait_for(lambda: got.count() >= 2300, 30, "2300 messages")
    consumer.close()
    h.join_or_raise(thread)

    by_value = {m.value: m for m in got.messages}
    assert set(by_value) == {f"b{i}".encode() for i in range(2300)}
    assert by_value[b"b7"].headers == {"trace_id": b"batch-trace", "app": b"x"}
    assert by_value[b"b8"].headers == {"trace_id": b"batch-trace"}
    # Per key, the batch's order is kept (one partition per key).
    for key in {m.key for m in got.messages}:
        values = [int(m.value[1:]) for m in got.messages if m.key == key]
        assert values == sorted(values)
