"""AsyncProducer and AsyncConsumer (asyncio) on the stack broker."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from im_infra import clog, mq

pytestmark = pytest.mark.integration


async def test_async_producer_send_and_send_sync(
    kafka_brokers: str, make_topic: Any, h: Any
) -> None:
    topic = make_topic("aprod")
    loop = asyncio.get_running_loop()
    results: list[mq.MQError | None] = []
    on_loop: list[bool] = []
    done = asyncio.Event()

    def callback(err: mq.MQError | None) -> None:
        on_loop.append(asyncio.get_running_loop() is loop)
        results.append(err)
        if len(results) == 50:
            done.set()

    async with mq.new_async_producer("mq-it", common={"brokers": [kafka_brokers]}) as producer:
        assert isinstance(producer, mq.AsyncProducer)
        for i in range(50):
            await producer.send(mq.Message(topic, key=f"k{i}", value=f"v{i}"), callback)
        with clog.trace_context("async-trace"):
            await producer.send_sync(mq.Message(topic, value=b"sync"))
        await asyncio.wait_for(done.wait(), 30)
        assert await producer.flush(10) == 0
    assert results == [None] * 50
    assert all(on_loop)

    got: list[mq.Message] = []

    async def handle(msg: mq.Message) -> None:
        got.append(msg)
        if len(got) == 51:
            await consumer.close()

    consumer = mq.new_async_consumer("mq-it", h.unique("g"), **h.overrides(kafka_brokers))
    assert isinstance(consumer, mq.AsyncConsumer)
    await asyncio.wait_for(_subscribe_until_closed(consumer, topic, handle), 60)
    assert {m.value for m in got} == {f"v{i}".encode() for i in range(50)} | {b"sync"}
    [sync] = [m for m in got if m.value == b"sync"]
    assert sync.headers["trace_id"] == b"async-trace"


async def _subscribe_until_closed(consumer: mq.AsyncKafkaConsumer, topic: str, handle: Any) -> None:
    await consumer.subscribe([topic], handle)


async def test_async_callback_sees_trace_id_and_errors_continue(
    kafka_brokers: str, make_topic: Any, h: Any, logs: Any
) -> None:
    topic = make_topic("acb")
    async with mq.new_async_producer("mq-it", common={"brokers": [kafka_brokers]}) as producer:
        with clog.trace_context("t-async"):
            await producer.send_sync(mq.Message(topic, value=b"bad"))
        await producer.send_sync(mq.Message(topic, value=b"good"))
    seen: list[tuple[bytes | str | None, str | None]] = []
    finished = asyncio.Event()

    async def handle(msg: mq.Message) -> None:
        await asyncio.sleep(0)
        seen.append((msg.value, clog.trace_id()))
        if msg.value == b"bad":
            raise ValueError("async failure")
        finished.set()

    consumer = mq.new_async_consumer("mq-it", h.unique("g"), **h.overrides(kafka_brokers))
    task = asyncio.create_task(consumer.subscribe([topic], handle))
    await asyncio.wait_for(finished.wait(), 30)
    await consumer.close()
    await asyncio.wait_for(task, 30)
    assert seen == [(b"bad", "t-async"), (b"good", None)]
    failed = [r for r in logs.records() if r["msg"] == "consume callback failed"]
    assert [r.get("trace_id") for r in failed] == ["t-async"]


async def test_async_for_stores_offsets_after_the_body(
    kafka_brokers: str, make_topic: Any, h: Any
) -> None:
    topic = make_topic("aiter")
    h.produce(kafka_brokers, topic, [f"v{i}".encode() for i in range(6)])
    group = h.unique("g")
    cfg = h.overrides(kafka_brokers)

    consumer = mq.new_async_consumer("mq-it", group, **cfg)
    values: list[bytes | str | None] = []
    async with consumer:
        async for msg in consumer.messages([topic]):
            values.append(msg.value)
            if msg.value == b"v3":
                break  # v3 was handled but not acknowledged by asking for the next one
    assert values == [b"v0", b"v1", b"v2", b"v3"]

    again = mq.new_async_consumer("mq-it", group, **cfg)
    rest: list[bytes | str | None] = []
    async with again:
        async for msg in again.messages([topic]):
            rest.append(msg.value)
            if msg.value == b"v5":
                break
    assert rest == [b"v3", b"v4", b"v5"]


async def test_cancelling_subscribe_stops_the_consumer(
    kafka_brokers: str, make_topic: Any, h: Any
) -> None:
    topic = make_topic("acancel")
    h.produce(kafka_brokers, topic, [b"only"])
    started = asyncio.Event()

    async def handle(msg: mq.Message) -> None:
        started.set()
        await asyncio.sleep(3600)

    consumer = mq.new_async_consumer("mq-it", h.unique("g"), **h.overrides(kafka_brokers))
    task = asyncio.create_task(consumer.subscribe([topic], handle))
    await asyncio.wait_for(started.wait(), 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 30)
    assert consumer.core.closed
    await consumer.close()


async def test_async_batched_hot_path_counts_a_returned_exception_as_failure(
    kafka_brokers: str, make_topic: Any, h: Any, logs: Any
) -> None:
    """No RetryPolicy, no headers: the batch runner's inlined path logs a returned exception."""
    topic = make_topic("aretplain")
    h.produce(kafka_brokers, topic, [b"a", b"b", b"c"], keyed=False)
    seen: list[bytes | str | None] = []
    finished = asyncio.Event()

    async def handle(msg: mq.Message) -> object:
        seen.append(msg.value)
        if len(seen) == 3:
            finished.set()
        return RuntimeError("go-style") if msg.value == b"b" else None

    consumer = mq.new_async_consumer("mq-it", h.unique("g"), **h.overrides(kafka_brokers))
    task = asyncio.create_task(consumer.subscribe([topic], handle))
    await asyncio.wait_for(finished.wait(), 30)
    await consumer.close()
    await asyncio.wait_for(task, 30)
    assert seen == [b"a", b"b", b"c"]
    failed = [r for r in logs.records() if r["msg"] == "consume callback failed"]
    assert [r["offset"] for r in failed] == [1]
