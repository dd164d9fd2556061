"""Issue #15 item 9: a callback that RETURNS an exception instance (the seed's Go form, "如果函数
返回 error") has failed: it is retried and dead-lettered like one that raises, never counted as
handled. On the real broker, blocking and asyncio."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

from im_infra import mq

pytestmark = pytest.mark.integration

POLICY = mq.RetryPolicy(max_attempts=3, backoff=0.01, dead_letter=True)


def _dead_letters(h: Any, brokers: str, topic: str, count: int) -> list[mq.Message]:
    dead = h.Collector()
    reader = mq.new_consumer("mq-it", h.unique("g"), **h.overrides(brokers))
    thread = h.run_in_thread(reader, [topic + mq.DLQ_SUFFIX], dead)
    h.wait_for(lambda: dead.count() >= count, 30, "the dead letters")
    reader.close()
    h.join_or_raise(thread)
    return list(dead.messages)


def test_blocking_callback_returning_an_exception_is_retried_and_dead_lettered(
    kafka_brokers: str, make_topic: Any, h: Any, admin: mq.KafkaAdminClient, logs: Any
) -> None:
    topic = make_topic("ret")
    admin.create_topic(topic + mq.DLQ_SUFFIX, 1, 1)
    h.produce(kafka_brokers, topic, [b"ok1", b"bad", b"ok2"])
    attempts: Counter[bytes] = Counter()
    handled: list[bytes] = []

    def callback(msg: mq.Message) -> Exception | None:
        assert isinstance(msg.value, bytes)
        attempts[msg.value] += 1
        if msg.value == b"bad":
            return ValueError("returned, not raised")
        handled.append(msg.value)
        return None

    consumer = mq.new_consumer("mq-it", h.unique("g"), retry=POLICY, **h.overrides(kafka_brokers))
    thread = h.run_in_thread(consumer, [topic], callback)
    h.wait_for(lambda: b"ok2" in handled, 30, "the last message")
    consumer.close()
    h.join_or_raise(thread)
    assert attempts == Counter({b"ok1": 1, b"bad": 3, b"ok2": 1})
    [letter] = _dead_letters(h, kafka_brokers, topic, 1)
    assert letter.value == b"bad"
    assert b"ValueError: returned, not raised" in letter.headers["dlq_error"]
    failures = [r for r in logs.records() if r["msg"] == "consume callback failed"]
    assert len(failures) == 3


def test_plain_consumer_logs_a_returned_exception_as_a_failure(
    kafka_brokers: str, make_topic: Any, h: Any, logs: Any
) -> None:
    """Without a RetryPolicy (the hot path): logged as a failure, consumption goes on."""
    topic = make_topic("retplain")
    h.produce(kafka_brokers, topic, [b"a", b"b"], keyed=False)
    seen: list[bytes] = []

    def callback(msg: mq.Message) -> object:
        assert isinstance(msg.value, bytes)
        seen.append(msg.value)
        return RuntimeError("go-style error") if msg.value == b"a" else "a value, not an error"

    consumer = mq.new_consumer("mq-it", h.unique("g"), **h.overrides(kafka_brokers))
    thread = h.run_in_thread(consumer, [topic], callback)
    h.wait_for(lambda: len(seen) == 2, 30, "both messages")
    consumer.close()
    h.join_or_raise(thread)
    failures = [r for r in logs.records() if r["msg"] == "consume callback failed"]
    assert [r["offset"] for r in failures] == [0]
    assert "go-style error" in str(failures[0].get("error"))


async def test_async_callback_returning_an_exception_is_retried_and_dead_lettered(
    kafka_brokers: str, make_topic: Any, h: Any, admin: mq.KafkaAdminClient
) -> None:
    topic = make_topic("aret")
    admin.create_topic(topic + mq.DLQ_SUFFIX, 1, 1)
    h.produce(kafka_brokers, topic, [b"bad", b"ok"])
    attempts: Counter[bytes] = Counter()

    async def handle(msg: mq.Message) -> Exception | None:
        assert isinstance(msg.value, bytes)
        attempts[msg.value] += 1
        if msg.value == b"ok":
            await consumer.close()
            return None
        return ConnectionError("returned from a coroutine")

    consumer = mq.new_async_consumer(
        "mq-it", h.unique("g"), retry=POLICY, **h.overrides(kafka_brokers)
    )
    await asyncio.wait_for(consumer.subscribe([topic], handle), 60)
    assert attempts == Counter({b"bad": 3, b"ok": 1})
    [letter] = _dead_letters(h, kafka_brokers, topic, 1)
    assert b"ConnectionError: returned from a coroutine" in letter.headers["dlq_error"]
