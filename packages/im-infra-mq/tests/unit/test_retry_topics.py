"""Retry topics without a broker: naming, where a failed message goes next, its headers, the
``consumer.retryTopics`` settings, and the in-memory broker creating topics on demand."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from im_infra import mq
from im_infra.mq._internal.retry_topics import forwards, next_hop, subscription
from im_infra.mq.dead_letter import retry_due_ms, retry_group, retry_stage
from im_infra.mq.testing import MemoryBroker

BROKERS: dict[str, Any] = {"common": {"brokers": ["b:9092"]}}


def _topics(*delays: int, dead_letter: bool = True) -> mq.RetryTopicsConfig:
    return mq.RetryTopicsConfig(delaysMs=delays, deadLetter=dead_letter)


def _consumed(topic: str = "orders", headers: dict[str, bytes] | None = None) -> mq.Message:
    return mq.Message(topic, b"k", b"v", {"trace_id": b"t1", **(headers or {})}, 2, 40)


def test_naming() -> None:
    assert mq.retry_topic("orders.v1", 1000) == "orders.v1.retry.1000"
    assert mq.retry_source("orders.v1.retry.1000") == "orders.v1"
    assert mq.retry_source("orders.v1") is None
    assert mq.retry_source("orders.retry.") is None
    assert subscription(["a", "b"], _topics(100, 500, 100)) == [
        "a.retry.100",
        "a.retry.500",
        "b.retry.100",
        "b.retry.500",
    ]


def test_a_failure_walks_the_delays_then_the_dead_letter_topic() -> None:
    topics = _topics(1000, 60000)
    first = next_hop(_consumed(), ValueError("a"), 1, topics, False, "g", now_ms=5_000)
    assert first is not None and first.delay_ms == 1000
    hop1 = first.message
    assert (hop1.topic, hop1.key, hop1.value) == ("orders.retry.1000", b"k", b"v")
    assert hop1.headers["trace_id"] == b"t1"
    # as consumed from the retry topic
    again = mq.Message(hop1.topic, hop1.key, hop1.value, hop1.headers, 0, 7)
    assert retry_stage(again) == 1 and retry_due_ms(again) == 6_000
    assert retry_group(again) == "g"
    second = next_hop(again, ValueError("b"), 2, topics, False, "g", now_ms=7_000)
    assert second is not None and second.message.topic == "orders.retry.60000"
    last = mq.Message(second.message.topic, b"k", b"v", second.message.headers, 1, 3)
    assert retry_due_ms(last) == 67_000
    dead = next_hop(last, RuntimeError("c"), 1, topics, False, "g")
    assert dead is not None and dead.delay_ms is None
    assert dead.message.topic == "orders.dlq"
    info = mq.read_dead_letter(dead.message)
    # the origin stays the first failure's; attempts add up over every topic
    assert (info.original_topic, info.original_partition, info.original_offset) == ("orders", 2, 40)
    assert info.attempts == 4 and info.error == "RuntimeError: c"
    assert "retry_due_ms" not in dead.message.headers


def test_dead_letter_switches() -> None:
    no_dlq = _topics(10, dead_letter=False)
    hop = next_hop(_consumed(), ValueError("x"), 1, no_dlq, True, "g")
    assert hop is not None
    at_end = mq.Message(hop.message.topic, headers=hop.message.headers, partition=0, offset=0)
    assert next_hop(at_end, ValueError("x"), 1, no_dlq, True, "g") is None
    # retry topics off: the RetryPolicy's dead_letter decides, as before
    off = _topics()
    assert not forwards(_consumed(), off)
    assert next_hop(_consumed(), ValueError("x"), 3, off, False, "g") is None
    plain = next_hop(_consumed(), ValueError("x"), 3, off, True, "g")
    assert plain is not None and plain.message.topic == "orders.dlq"
    # a message read from a retry topic after they were turned off still ends in the DLQ
    assert forwards(at_end, off)
    late = next_hop(at_end, ValueError("x"), 1, off, False, "g")
    assert late is not None and late.message.topic == "orders.dlq"


def test_a_replayed_dead_letter_starts_afresh() -> None:
    hop = next_hop(_consumed(), ValueError("x"), 1, _topics(10), False, "g")
    assert hop is not None
    # copied back to the source topic by an operator: not a retry-topic message
    replayed = mq.Message("orders", headers=hop.message.headers, partition=0, offset=99)
    assert retry_stage(replayed) == 0 and retry_due_ms(replayed) is None
    again = next_hop(replayed, ValueError("y"), 1, _topics(10), False, "g")
    assert again is not None
    info = mq.read_dead_letter(again.message)
    assert (info.original_offset, info.attempts) == (99, 1)


def test_retry_topics_settings() -> None:
    cfg = mq.load_config("svc", **BROKERS, consumer={"retryTopics": {"delaysMs": [1000, 10000]}})
    assert cfg.consumer.retry_topics.delays_ms == (1000, 10000)
    assert cfg.consumer.retry_topics.dead_letter and cfg.consumer.retry_topics.enabled
    assert not mq.load_config("svc", **BROKERS).consumer.retry_topics.enabled
    assert mq.KAFKA.is_live("consumer.retry_topics.delays_ms")
    assert not mq.KAFKA.is_live("consumer.concurrency")
    with pytest.raises(mq.ConfigError, match=r"consumer\.retryTopics\.delaysMs"):
        mq.load_config("svc", **BROKERS, consumer={"retryTopics": {"delaysMs": [0]}})
    with pytest.raises(mq.ConfigError, match="retryTopics"):
        mq.load_config("svc", **BROKERS, consumer={"retryTopics": {"delays": [5]}})


def test_memory_broker_creates_retry_topics_where_auto_creation_is_off() -> None:
    broker = MemoryBroker(auto_create_topics=False)
    broker.create_topic("orders", partitions=3)
    consumer = broker.consumer(
        "g", auto_offset_reset="earliest", retry_topics=_topics(1, dead_letter=True)
    )
    seen: list[str] = []

    def handle(msg: mq.Message) -> None:
        seen.append(msg.topic)
        if len(seen) == 2:
            consumer.close()
        raise ValueError("no")

    with broker.producer() as producer:
        producer.send_sync(mq.Message("orders", key=b"k", value=b"v"))
    thread = threading.Thread(target=consumer.subscribe, args=(["orders"], handle))
    thread.start()
    thread.join(10)
    assert seen == ["orders", "orders.retry.1"]
    broker.create_topic("orders.retry.1", partitions=3)  # exists with the source's count
    with pytest.raises(mq.TopicExistsError):
        broker.create_topic("orders.retry.1", partitions=1)
    assert [m.value for m in broker.messages("orders.dlq")] == [b"v"]
