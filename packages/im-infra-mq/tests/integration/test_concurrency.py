"""Ordered concurrency (``consumer.concurrency``) on the stack broker: same key in order, one at
a time; different keys in parallel; offsets never stored past an unfinished message."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import defaultdict
from typing import Any

import pytest

from im_infra import mq

pytestmark = pytest.mark.integration

KEYS = 40
PER_KEY = 15


def _produce_keyed(brokers: str, topic: str) -> None:
    with mq.new_producer("mq-it", common={"brokers": [brokers]}) as producer:
        for seq in range(PER_KEY):
            for k in range(KEYS):
                producer.send(mq.Message(topic, key=f"key-{k}", value=f"{seq}"))
        assert producer.flush(30) == 0


class Tracker:
    """Per-key sequence seen, how many handlers ran at once, keys running twice at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seen: dict[bytes, list[int]] = defaultdict(list)
        self.running: set[bytes] = set()
        self.now = self.peak = 0
        self.overlaps = 0
        self.count = 0

    def start(self, msg: mq.Message) -> None:
        assert isinstance(msg.key, bytes) and isinstance(msg.value, bytes)
        with self.lock:
            if msg.key in self.running:
                self.overlaps += 1
            self.running.add(msg.key)
            self.now += 1
            self.peak = max(self.peak, self.now)
            self.seen[msg.key].append(int(msg.value))

    def end(self, msg: mq.Message) -> None:
        with self.lock:
            assert isinstance(msg.key, bytes)
            self.running.discard(msg.key)
            self.now -= 1
            self.count += 1

    def check(self) -> None:
        assert self.overlaps == 0
        assert self.peak > 1, "no two handlers ever ran at once"
        assert len(self.seen) == KEYS
        for key, seqs in self.seen.items():
            assert seqs == list(range(PER_KEY)), f"{key!r} out of order: {seqs}"


def test_blocking_consumer_runs_keys_in_parallel_in_order(
    kafka_brokers: str, make_topic: Any, h: Any
) -> None:
    topic = make_topic("conc", 6)
    _produce_keyed(kafka_brokers, topic)
    t = Tracker()

    def handle(msg: mq.Message) -> None:
        t.start(msg)
        time.sleep(random.uniform(0.0005, 0.003))
        t.end(msg)

    consumer = mq.new_consumer("mq-it", h.unique("g"), **h.overrides(kafka_brokers, concurrency=8))
    thread = h.run_in_thread(consumer, [topic], handle)
    h.wait_for(lambda: t.count >= KEYS * PER_KEY, 60, "every message")
    consumer.close()
    h.join_or_raise(thread)
    t.check()
    assert t.peak <= 8


async def test_asyncio_consumer_runs_keys_in_parallel_in_order(
    kafka_brokers: str, make_topic: Any, h: Any
) -> None:
    topic = make_topic("aconc", 6)
    _produce_keyed(kafka_brokers, topic)
    t = Tracker()
    done = asyncio.Event()

    async def handle(msg: mq.Message) -> None:
        t.start(msg)
        await asyncio.sleep(random.uniform(0.0005, 0.003))
        t.end(msg)
        if t.count == KEYS * PER_KEY:
            done.set()

    consumer = mq.new_async_consumer(
        "mq-it", h.unique("g"), **h.overrides(kafka_brokers, concurrency=16)
    )
    task = asyncio.create_task(consumer.subscribe([topic], handle))
    await asyncio.wait_for(done.wait(), 60)
    await consumer.close()
    await asyncio.wait_for(task, 30)
    t.check()
    assert t.peak <= 16


def test_close_with_a_slow_message_in_flight_never_commits_past_it(
    kafka_brokers: str, make_topic: Any, h: Any
) -> None:
    """Partition 0 holds a slow message, then fast ones of other keys: closing while the slow
    one runs lets it finish; what is committed never passes a message that did not finish."""
    topic = make_topic("conc-close", 1)
    with mq.new_producer("mq-it", common={"brokers": [kafka_brokers]}) as producer:
        producer.send(mq.Message(topic, key="slow", value=b"0"))
        for i in range(1, 30):
            producer.send(mq.Message(topic, key=f"fast-{i}", value=f"{i}".encode()))
        producer.send(mq.Message(topic, key="slow", value=b"30"))  # after the slow one
        assert producer.flush(30) == 0
    group, cfg = h.unique("g"), h.overrides(kafka_brokers, concurrency=4)
    started = threading.Event()
    handled: list[bytes] = []

    def handle(msg: mq.Message) -> None:
        assert isinstance(msg.value, bytes)
        if msg.value == b"0":
            started.set()
            time.sleep(1.0)
        handled.append(msg.value)

    consumer = mq.new_consumer("mq-it", group, **cfg)
    thread = h.run_in_thread(consumer, [topic], handle)
    assert started.wait(30)
    consumer.close()  # the slow one is in flight: it finishes, b"30" (same key) never starts
    h.join_or_raise(thread)
    assert b"0" in handled and b"30" not in handled

    again = h.Collector()
    second = mq.new_consumer("mq-it", group, **cfg)
    t2 = h.run_in_thread(second, [topic], again)
    h.wait_for(lambda: b"30" in again.values(), 30, "the slow key's second message")
    second.close()
    h.join_or_raise(t2)
    # Everything not handled before is delivered now; b"0" finished, so it is not.
    assert set(again.values()) >= {f"{i}".encode() for i in range(1, 31)} - set(handled)


def test_close_from_a_concurrent_callback_returns_at_once(
    kafka_brokers: str, make_topic: Any, h: Any
) -> None:
    topic = make_topic("conc-self", 3)
    _produce_keyed(kafka_brokers, topic)
    consumer = mq.new_consumer("mq-it", h.unique("g"), **h.overrides(kafka_brokers, concurrency=4))

    def handle(msg: mq.Message) -> None:
        consumer.close()  # from a worker thread: must not wait for the loop (it waits for us)

    thread = h.run_in_thread(consumer, [topic], handle)
    started = time.monotonic()
    h.join_or_raise(thread, timeout=60)
    assert time.monotonic() - started < 20  # close_timeout is 30 s: no deadlock wait
