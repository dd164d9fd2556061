"""Consumer groups on the stack broker: split, at-least-once, commits, errors, retries, DLQ."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import pytest

from im_infra import clog, mq

pytestmark = pytest.mark.integration


def test_two_members_split_partitions_and_receive_everything(
    kafka_brokers: str, make_topic: Any, h: Any
) -> None:
    topic = make_topic("split", 4)
    group = h.unique("g")
    got_a, got_b = h.Collector(), h.Collector()
    a = mq.new_consumer("mq-it", group, **h.overrides(kafka_brokers))
    b = mq.new_consumer("mq-it", group, **h.overrides(kafka_brokers))
    ta = h.run_in_thread(a, [topic], got_a)
    tb = h.run_in_thread(b, [topic], got_b)
    # Produce while both are (re)joining: at-least-once must still hold across the rebalance.
    values = [f"m{i}".encode() for i in range(400)]
    h.produce(kafka_brokers, topic, values)
    h.wait_for(
        lambda: set(got_a.values()) | set(got_b.values()) >= set(values), 60, "all 400 messages"
    )
    # Both members got work once the group settled: produce a second round and check the split.
    more = [f"n{i}".encode() for i in range(400)]
    h.produce(kafka_brokers, topic, more)
    h.wait_for(lambda: set(got_a.values()) | set(got_b.values()) >= set(more), 60, "second round")
    a.close()
    b.close()
    h.join_or_raise(ta)
    h.join_or_raise(tb)
    parts_a = {m.partition for m in got_a.messages if m.value in set(more)}
    parts_b = {m.partition for m in got_b.messages if m.value in set(more)}
    assert parts_a and parts_b, (parts_a, parts_b)
    assert not parts_a & parts_b
    assert parts_a | parts_b == {0, 1, 2, 3}
    counts = Counter(got_a.values() + got_b.values())
    duplicates = sum(c - 1 for c in counts.values())
    print(f"split: {len(counts)} distinct, {duplicates} duplicates")


def test_offsets_are_committed_on_close_and_resumed(
    kafka_brokers: str, make_topic: Any, h: Any
) -> None:
    topic = make_topic("resume", 2)
    group = h.unique("g")
    first = [f"a{i}".encode() for i in range(100)]
    h.produce(kafka_brokers, topic, first)
    # A long auto-commit interval: only the commit on close can save the progress.
    cfg = h.overrides(kafka_brokers, autoCommitIntervalMs=600_000)
    c1 = mq.new_consumer("mq-it", group, **cfg)
    got1 = h.Collector()
    t1 = h.run_in_thread(c1, [topic], got1)
    h.wait_for(lambda: got1.count() >= 100, 30, "first batch")
    c1.close()
    h.join_or_raise(t1)

    second = [f"b{i}".encode() for i in range(50)]
    h.produce(kafka_brokers, topic, second)
    c2 = mq.new_consumer("mq-it", group, **cfg)
    got2 = h.Collector()
    t2 = h.run_in_thread(c2, [topic], got2)
    h.wait_for(lambda: got2.count() >= 50, 30, "second batch")
    c2.close()
    h.join_or_raise(t2)
    assert sorted(got2.values()) == sorted(second)


def test_callback_errors_are_logged_and_consumption_continues(
    kafka_brokers: str, make_topic: Any, h: Any, logs: Any
) -> None:
    topic = make_topic("errors")
    values = [f"v{i}".encode() for i in range(20)]
    h.produce(kafka_brokers, topic, values)
    handled: list[bytes] = []

    def callback(msg: mq.Message) -> None:
        assert isinstance(msg.value, bytes)
        if msg.value in (b"v3", b"v11"):
            raise ValueError(f"cannot handle {msg.value!r}")
        handled.append(msg.value)

    consumer = mq.new_consumer("mq-it", h.unique("g"), **h.overrides(kafka_brokers))
    thread = h.run_in_thread(consumer, [topic], callback)
    h.wait_for(lambda: len(handled) >= 18, 30, "18 handled messages")
    consumer.close()
    h.join_or_raise(thread)
    assert handled == [v for v in values if v not in (b"v3", b"v11")]
    failures = [r for r in logs.records() if r["msg"] == "consume callback failed"]
    assert [(r["topic"], r["partition"], r["offset"]) for r in failures] == [
        (topic, 0, 3),
        (topic, 0, 11),
    ]
    assert all("cannot handle" in str(r.get("error")) for r in failures)


def test_retry_policy_then_dead_letter_topic(
    kafka_brokers: str, make_topic: Any, h: Any, admin: mq.KafkaAdminClient
) -> None:
    topic = make_topic("dlq")
    admin.create_topic(topic + mq.DLQ_SUFFIX, 1, 1)  # cleaned up by make_topic
    h.produce(kafka_brokers, topic, [b"ok1", b"flaky", b"poison", b"ok2"])
    attempts: Counter[bytes] = Counter()
    handled: list[bytes] = []

    def callback(msg: mq.Message) -> None:
        assert isinstance(msg.value, bytes)
        attempts[msg.value] += 1
        if msg.value == b"poison":
            raise RuntimeError("poison message")
        if msg.value == b"flaky" and attempts[b"flaky"] < 3:
            raise ConnectionError("transient")
        handled.append(msg.value)

    policy = mq.RetryPolicy(max_attempts=3, backoff=0.01, dead_letter=True)
    consumer = mq.new_consumer("mq-it", h.unique("g"), retry=policy, **h.overrides(kafka_brokers))
    thread = h.run_in_thread(consumer, [topic], callback)
    h.wait_for(lambda: b"ok2" in handled, 30, "the last message")
    consumer.close()
    h.join_or_raise(thread)
    assert handled == [b"ok1", b"flaky", b"ok2"]
    assert attempts == Counter({b"ok1": 1, b"flaky": 3, b"poison": 3, b"ok2": 1})

    dead = h.Collector()
    reader = mq.new_consumer("mq-it", h.unique("g"), **h.overrides(kafka_brokers))
    rt = h.run_in_thread(reader, [topic + mq.DLQ_SUFFIX], dead)
    h.wait_for(lambda: dead.count() >= 1, 30, "the dead letter")
    reader.close()
    h.join_or_raise(rt)
    [letter] = dead.messages
    assert letter.value == b"poison"
    assert letter.key == b"k2"
    info = mq.read_dead_letter(letter)
    assert (info.original_topic, info.original_partition, info.original_offset) == (topic, 0, 2)
    assert info.attempts == 3
    assert "RuntimeError: poison message" in info.error
    assert letter.headers["dlq_original_topic"] == topic.encode()


def test_producer_trace_id_appears_in_consumer_log_lines(
    kafka_brokers: str, make_topic: Any, h: Any, logs: Any
) -> None:
    topic = make_topic("tracelog")
    producer = mq.new_producer("mq-it", common={"brokers": [kafka_brokers]})
    with producer, clog.trace_context() as tid:
        producer.send_sync(mq.Message(topic, value=b"traced"))
    app_log = clog.get_logger("app")

    def callback(msg: mq.Message) -> None:
        app_log.info("handling message", value=msg.value)
        raise RuntimeError("and failing")  # the library's error line must carry it too

    consumer = mq.new_consumer("mq-it", h.unique("g"), **h.overrides(kafka_brokers))
    thread = h.run_in_thread(consumer, [topic], callback)
    h.wait_for(
        lambda: any(r["msg"] == "consume callback failed" for r in logs.records()), 30, "a failure"
    )
    consumer.close()
    h.join_or_raise(thread)
    records = logs.records()
    handling = [r for r in records if r["msg"] == "handling message"]
    failed = [r for r in records if r["msg"] == "consume callback failed"]
    assert [r.get("trace_id") for r in handling] == [tid]
    assert [r.get("trace_id") for r in failed] == [tid]
    assert all(r.get("trace_id") != tid for r in records if r["msg"] == "subscribed")


def test_close_from_another_thread_finishes_the_message_in_hand(
    kafka_brokers: str, make_topic: Any, h: Any
) -> None:
    topic = make_topic("close")
    h.produce(kafka_brokers, topic, [b"first", b"second"])
    entered = threading.Event()
    release = threading.Event()
    finished: list[bytes] = []

    def callback(msg: mq.Message) -> None:
        assert isinstance(msg.value, bytes)
        entered.set()
        assert release.wait(30)
        finished.append(msg.value)

    group = h.unique("g")
    consumer = mq.new_consumer("mq-it", group, **h.overrides(kafka_brokers))
    thread = h.run_in_thread(consumer, [topic], callback)
    assert entered.wait(30)
    closer = threading.Thread(target=consumer.close)
    closer.start()
    closer.join(0.3)
    assert closer.is_alive(), "close() must wait for the message in hand"
    release.set()
    closer.join(30)
    h.join_or_raise(thread)
    assert finished == [b"first"]
    consumer.close()  # idempotent
    with pytest.raises(mq.ConsumerError, match="closed"):
        consumer.subscribe([topic], callback)

    # The handled message was committed on close; the next member starts at "second".
    nxt = h.Collector()
    again = mq.new_consumer("mq-it", group, **h.overrides(kafka_brokers))
    t2 = h.run_in_thread(again, [topic], nxt)
    h.wait_for(lambda: nxt.count() >= 1, 30, "the second message")
    again.close()
    h.join_or_raise(t2)
    assert nxt.values() == [b"second"]


def test_close_from_inside_the_callback(kafka_brokers: str, make_topic: Any, h: Any) -> None:
    topic = make_topic("selfclose")
    h.produce(kafka_brokers, topic, [b"x", b"y", b"z"])
    seen: list[mq.Message] = []
    consumer = mq.new_consumer("mq-it", h.unique("g"), **h.overrides(kafka_brokers))

    def callback(msg: mq.Message) -> None:
        seen.append(msg)
        consumer.close()

    consumer.subscribe([topic], callback)  # returns once closed
    assert [m.value for m in seen] == [b"x"]
