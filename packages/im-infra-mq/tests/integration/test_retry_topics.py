"""Non-blocking retries on the stack broker, beyond the contract tests (which run on both
backends): the delays followed live from kafka.yaml in etcd, and retry topics with ordered
concurrency, blocking and asyncio."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from im_infra import coord, mq

pytestmark = pytest.mark.integration


@pytest.fixture
def provider(etcd_endpoints: str) -> Iterator[coord.EtcdProvider]:
    unique = f"mqrt{uuid.uuid4().hex[:8]}"
    with coord.connect(etcd_endpoints, service=f"{unique}-svc", env=unique, timeout=3) as p:
        yield p
        p.client.delete(p.config.root, prefix=True)  # nothing left on the shared etcd


def _dead_letters(brokers: str, topic: str, count: int, h: Any) -> list[mq.Message]:
    """Every message of ``topic``'s dead-letter topic (``count`` expected, extras waited for)."""
    got = h.Collector()
    reader = mq.new_consumer("mq-it", h.unique("dlq"), **h.overrides(brokers))
    thread = h.run_in_thread(reader, [topic + mq.DLQ_SUFFIX], got)
    h.wait_for(lambda: got.count() >= count, 30, f"{count} dead letters")
    time.sleep(0.5)
    reader.close()
    h.join_or_raise(thread)
    return list(got.messages)


def test_retry_delays_follow_kafka_yaml_live(
    provider: coord.EtcdProvider, kafka_brokers: str, make_topic: Callable[..., str], h: Any
) -> None:
    svc = provider.service
    assert svc is not None
    provider.config.set(f"{svc}/kafka.yaml", "consumer:\n  retryTopics:\n    delaysMs: [200]\n")
    topic = make_topic("live")
    consumer = mq.new_consumer(svc, h.unique("g"), coord=provider, **h.overrides(kafka_brokers))
    assert consumer.retry_topics.delays_ms == (200,)
    seen: list[tuple[str, bytes, float]] = []
    lock = threading.Lock()

    def handler(msg: mq.Message) -> None:
        with lock:
            seen.append((msg.topic, msg.value, time.time()))  # type: ignore[arg-type]
        raise ValueError("no")

    def topics_of(value: bytes) -> list[str]:
        with lock:
            return [t for t, v, _ in seen if v == value]

    thread = h.run_in_thread(consumer, [topic], handler)
    try:
        h.produce(kafka_brokers, topic, [b"first"])
        h.wait_for(lambda: len(topics_of(b"first")) >= 2, 30, "first's retry")
        provider.config.set(
            f"{svc}/kafka.yaml",
            "consumer:\n  retryTopics:\n    delaysMs: [600]\n    deadLetter: false\n",
        )
        h.wait_for(lambda: consumer.retry_topics.delays_ms == (600,), 10, "the change applied")
        h.produce(kafka_brokers, topic, [b"second"])
        h.wait_for(lambda: len(topics_of(b"second")) >= 2, 30, "second's retry")
        time.sleep(0.3)
    finally:
        consumer.close()
        h.join_or_raise(thread)
    assert dict.fromkeys(topics_of(b"first")) == dict.fromkeys([topic, f"{topic}.retry.200"])
    assert dict.fromkeys(topics_of(b"second")) == dict.fromkeys([topic, f"{topic}.retry.600"])
    with lock:
        second = {t: when for t, v, when in reversed(seen) if v == b"second"}  # first of each
    assert second[f"{topic}.retry.600"] - second[topic] >= 0.6 - 0.005
    # deadLetter was turned off before "second" failed for good: only "first" is dead-lettered
    dead = _dead_letters(kafka_brokers, topic, 1, h)
    assert [m.value for m in dead] == [b"first"]


KEYS, PER_KEY = 12, 5


def _values() -> list[tuple[str, bytes]]:
    return [(f"k{k}", f"{k}-{i}".encode()) for i in range(PER_KEY) for k in range(KEYS)]


def _fails(value: bytes) -> bool:
    """Every third key's second message fails every attempt."""
    k, i = value.decode().split("-")
    return int(k) % 3 == 0 and i == "1"


def _produce(brokers: str, topic: str) -> None:
    with mq.new_producer("mq-it", common={"brokers": [brokers]}) as producer:
        for key, value in _values():
            producer.send(mq.Message(topic, key=key, value=value))
        assert producer.flush(30) == 0


def _check(counts: Counter[tuple[str, bytes]], topic: str, dead: list[mq.Message]) -> None:
    retry = mq.retry_topic(topic, 200)
    failing = {v for _, v in _values() if _fails(v)}
    for _, value in _values():
        assert counts[(topic, value)] >= 1, value  # at-least-once: nothing lost
        assert counts[(retry, value)] == (1 if value in failing else 0), value
    assert sorted(m.value for m in dead) == sorted(failing)  # type: ignore[type-var]
    for letter in dead:
        info = mq.read_dead_letter(letter)
        assert info.original_topic == topic and info.attempts == 2


def test_retry_topics_with_ordered_concurrency(
    kafka_brokers: str, make_topic: Callable[..., str], admin: mq.KafkaAdminClient, h: Any
) -> None:
    topic = make_topic("conc", partitions=3)
    _produce(kafka_brokers, topic)
    counts: Counter[tuple[str, bytes]] = Counter()
    lock = threading.Lock()

    def handler(msg: mq.Message) -> None:
        assert isinstance(msg.value, bytes)
        with lock:
            counts[(msg.topic, msg.value)] += 1
        time.sleep(0.002)
        if _fails(msg.value):
            raise RuntimeError("always")

    cfg = h.overrides(kafka_brokers, concurrency=4, retryTopics={"delaysMs": [200]})
    consumer = mq.new_consumer("mq-it", h.unique("g"), **cfg)
    assert consumer.concurrency == 4
    thread = h.run_in_thread(consumer, [topic], handler)
    failing = sum(1 for _, v in _values() if _fails(v))
    retry = mq.retry_topic(topic, 200)
    try:
        h.wait_for(
            lambda: sum(n for (t, _), n in counts.items() if t == retry) >= failing,
            60,
            "every failure retried",
        )
        time.sleep(0.3)
    finally:
        consumer.close()
        h.join_or_raise(thread)
    _check(counts, topic, _dead_letters(kafka_brokers, topic, failing, h))
    # created by the consumer's admin client like their source (an auto-created topic would
    # have the broker's default partition count, 1 on the local broker)
    assert admin.describe_topic(retry).partitions == 3
    assert admin.describe_topic(topic + mq.DLQ_SUFFIX).partitions == 3


def test_asyncio_retry_topics_with_ordered_concurrency(
    kafka_brokers: str, make_topic: Callable[..., str], h: Any
) -> None:
    topic = make_topic("aconc", partitions=3)
    _produce(kafka_brokers, topic)
    counts: Counter[tuple[str, bytes]] = Counter()
    failing = sum(1 for _, v in _values() if _fails(v))
    retry = mq.retry_topic(topic, 200)
    cfg = h.overrides(kafka_brokers, concurrency=4, retryTopics={"delaysMs": [200]})

    async def main() -> None:
        consumer = mq.new_async_consumer("mq-it", h.unique("g"), **cfg)

        async def handle(msg: mq.Message) -> None:
            assert isinstance(msg.value, bytes)
            counts[(msg.topic, msg.value)] += 1
            await asyncio.sleep(0.002)
            if _fails(msg.value):
                raise RuntimeError("always")

        run = asyncio.ensure_future(consumer.subscribe([topic], handle))
        deadline = time.monotonic() + 60
        while sum(n for (t, _), n in counts.items() if t == retry) < failing:
            assert time.monotonic() < deadline, "every failure retried"
            assert not run.done() or run.result() is None
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        await consumer.close()
        await asyncio.wait_for(run, 30)

    asyncio.run(main())
    _check(counts, topic, _dead_letters(kafka_brokers, topic, failing, h))
