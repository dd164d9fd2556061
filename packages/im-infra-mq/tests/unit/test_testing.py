"""mq.testing's in-memory-only controls (the shared behaviour is in
packages/im-infra-mq/tests/integration/
test_mq_contract.py, run against the fake and a real broker)."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
import zlib

import pytest

from im_infra import clog, mq
from im_infra.mq.testing import MemoryBroker


def test_redeliver_uncommitted_hands_out_a_message_in_progress_again() -> None:
    broker = MemoryBroker()
    with broker.producer() as producer:
        producer.send_sync(mq.Message("t", value=b"m"))
    consumer = broker.consumer("g", auto_offset_reset="earliest")
    seen: list[bytes | str | None] = []
    release = threading.Event()

    def handle(msg: mq.Message) -> None:
        seen.append(msg.value)
        if len(seen) == 1:
            release.wait(5)  # the first delivery is "in progress" when redelivery is asked
        else:
            consumer.close()

    t = threading.Thread(target=consumer.subscribe, args=(["t"], handle))
    t.start()
    deadline = time.monotonic() + 5
    while not seen and time.monotonic() < deadline:
        time.sleep(0.01)
    assert broker.committed("g", "t") is None
    assert broker.redeliver_uncommitted("g") == 1
    assert broker.redeliver_uncommitted("other") == 0
    release.set()
    t.join(5)
    assert seen == [b"m", b"m"]
    assert broker.committed("g", "t") == 1


def test_seek_replays_committed_messages() -> None:
    broker = MemoryBroker()
    with broker.producer() as producer:
        for v in (b"a", b"b", b"c"):
            producer.send(mq.Message("t", value=v))
        assert producer.flush(5) == 0
    got: list[bytes | str | None] = []

    def drain() -> None:
        consumer = broker.consumer("g", auto_offset_reset="earliest")

        def handle(msg: mq.Message) -> None:
            got.append(msg.value)
            if msg.offset == 2:
                consumer.close()

        consumer.subscribe(["t"], handle)

    drain()
    assert broker.committed("g", "t") == 3
    broker.seek("g", "t", 0, 1)
    drain()
    assert got == [b"a", b"b", b"c", b"b", b"c"]


def test_latest_reset_skips_what_was_sent_before_joining() -> None:
    broker = MemoryBroker()
    with broker.producer() as producer:
        producer.send_sync(mq.Message("t", value=b"old"))
        consumer = broker.consumer("g")  # latest, the default
        got: list[mq.Message] = []

        def handle(msg: mq.Message) -> None:
            got.append(msg)
            consumer.close()

        t = threading.Thread(target=consumer.subscribe, args=(["t"], handle))
        t.start()
        time.sleep(0.2)
        producer.send_sync(mq.Message("t", value=b"new"))
        t.join(5)
    assert [m.value for m in got] == [b"new"]


def test_partition_rule_and_messages() -> None:
    broker = MemoryBroker(partitions=4)
    assert broker.partition_for("t", "user-9") == zlib.crc32(b"user-9") % 4
    with broker.producer() as producer:
        producer.send_sync(mq.Message("t", key="user-9", value="v"))
        producer.send_sync(mq.Message("t", value=b"x", partition=3))
    stored = broker.messages("t")
    assert [(m.partition, m.offset) for m in stored] == sorted(
        [(zlib.crc32(b"user-9") % 4, 0), (3, 0 if zlib.crc32(b"user-9") % 4 != 3 else 1)]
    )


def test_delivery_errors_reach_the_callback_and_send_sync() -> None:
    broker = MemoryBroker(auto_create_topics=False)
    broker.create_topic("known", 2)
    with broker.producer() as producer:
        with pytest.raises(mq.DeliveryError) as info:
            producer.send_sync(mq.Message("unknown", value=b"v"))
        assert info.value.code == "UNKNOWN_TOPIC_OR_PART"
        errors: list[mq.MQError | None] = []
        producer.send(mq.Message("known", value=b"v", partition=7), errors.append)
        producer.flush(5)
        assert isinstance(errors[0], mq.DeliveryError) and errors[0].code == "_UNKNOWN_PARTITION"
        with pytest.raises(mq.InvalidArgumentError, match="value"):
            producer.send(mq.Message("known", value=42))  # type: ignore[arg-type]


def test_bad_arguments() -> None:
    with pytest.raises(mq.ConfigError):
        MemoryBroker(partitions=0)
    broker = MemoryBroker()
    with pytest.raises(mq.ConfigError):
        broker.consumer("")
    with pytest.raises(mq.ConfigError):
        broker.consumer("g", auto_offset_reset="middle")  # type: ignore[arg-type]
    with pytest.raises(mq.ConfigError):
        broker.seek("g", "t", 0, -1)
    broker.create_topic("t", 2)
    with pytest.raises(mq.TopicExistsError, match="2 partitions, not 3"):
        broker.create_topic("t", 3)


# ------------------------------------------------------------------ the asyncio driver's steps
# (the blocking driver's retries and closes are in the contract tests; these take the asyncio
# driver through its Pause and its cancellation paths, which the contract tests do not)


def _holding_one() -> MemoryBroker:
    """A broker with one message, b"m", in topic "t"."""
    broker = MemoryBroker()
    with broker.producer() as producer:
        producer.send_sync(mq.Message("t", value=b"m"))
    return broker


def test_asyncio_retries_pause_between_attempts_then_dead_letter() -> None:
    broker = _holding_one()
    policy = mq.RetryPolicy(max_attempts=3, backoff=0.05, multiplier=1.0)
    consumer = broker.async_consumer("g", retry=policy, auto_offset_reset="earliest")
    calls: list[float] = []

    async def main() -> None:
        async def handle(msg: mq.Message) -> None:
            calls.append(time.monotonic())
            raise ValueError("always")

        task = asyncio.create_task(consumer.subscribe(["t"], handle))
        while broker.committed("g", "t") is None:
            await asyncio.sleep(0.01)
        await consumer.close()
        await asyncio.wait_for(task, 5)

    asyncio.run(asyncio.wait_for(main(), 10))
    assert len(calls) == 3
    assert all(b - a >= 0.045 for a, b in itertools.pairwise(calls))
    (dead,) = broker.messages("t.dlq")
    assert dead.value == b"m" and dead.headers["dlq_attempts"] == b"3"
    assert broker.committed("g", "t") == 1


def test_asyncio_close_during_a_retry_pause_ends_it_and_leaves_the_message() -> None:
    broker = _holding_one()
    policy = mq.RetryPolicy(max_attempts=2, backoff=30.0, max_backoff=30.0)
    consumer = broker.async_consumer("g", retry=policy, auto_offset_reset="earliest")
    failed = asyncio.Event()

    async def main() -> float:
        async def handle(msg: mq.Message) -> None:
            failed.set()
            raise ValueError("boom")

        task = asyncio.create_task(consumer.subscribe(["t"], handle))
        await asyncio.wait_for(failed.wait(), 5)
        started = time.monotonic()
        await consumer.close()  # the 30 s pause is cut short
        await asyncio.wait_for(task, 5)
        return time.monotonic() - started

    assert asyncio.run(main()) < 2
    assert broker.committed("g", "t") is None
    assert broker.messages("t.dlq") == []
    assert broker.redeliver_uncommitted("g") == 1


def test_cancelling_an_asyncio_consumer_mid_callback_leaves_the_group_cleanly() -> None:
    broker = MemoryBroker()
    with broker.producer() as producer, clog.trace_context("t-7"):
        producer.send_sync(mq.Message("t", value=b"m"))
    consumer = broker.async_consumer("g", auto_offset_reset="earliest")
    entered = asyncio.Event()
    inside: list[str | None] = []

    async def main() -> str | None:
        async def handle(msg: mq.Message) -> None:
            inside.append(clog.trace_id())
            entered.set()
            await asyncio.sleep(30)

        task = asyncio.create_task(consumer.subscribe(["t"], handle))
        await asyncio.wait_for(entered.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return clog.trace_id()

    assert asyncio.run(main()) is None
    assert inside == ["t-7"]
    assert broker.committed("g", "t") is None  # cut short: delivered again to the next member
    again = broker.consumer("g", auto_offset_reset="earliest")
    got: list[bytes | str | None] = []

    def handle_again(msg: mq.Message) -> None:
        got.append(msg.value)
        again.close()

    again.subscribe(["t"], handle_again)  # joins at once: the cancelled member left the group
    assert got == [b"m"]


def test_a_closed_producer_refuses_before_looking_at_the_message() -> None:
    broker = MemoryBroker()
    producer = broker.producer()
    producer.close()
    with pytest.raises(mq.ProducerClosedError):
        producer.send(mq.Message("t", value=42))  # type: ignore[arg-type]
