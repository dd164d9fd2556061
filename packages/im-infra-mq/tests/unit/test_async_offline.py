"""AsyncProducer without a broker: results arrive on the event loop, nothing is dropped."""

from __future__ import annotations

import asyncio

import pytest

from im_infra.mq import (
    AsyncKafkaProducer,
    DeliveryError,
    KafkaProducer,
    Message,
    MQError,
    ProducerClosedError,
)

UNREACHABLE = {"bootstrap.servers": "127.0.0.1:9", "client.id": "unit", "linger.ms": 0}


async def test_close_reports_pending_messages_on_the_loop() -> None:
    loop = asyncio.get_running_loop()
    producer = AsyncKafkaProducer(KafkaProducer(UNREACHABLE, close_timeout=0.2))
    seen: list[tuple[bool, MQError | None]] = []

    def callback(err: MQError | None) -> None:
        seen.append((asyncio.get_running_loop() is loop, err))

    async with producer:
        for i in range(5):
            await producer.send(Message("t", key=str(i), value=b"x"), callback)
    for _ in range(100):
        if len(seen) == 5:
            break
        await asyncio.sleep(0.01)
    assert len(seen) == 5
    assert all(on_loop for on_loop, _ in seen)
    assert all(isinstance(err, DeliveryError) for _, err in seen)
    with pytest.raises(ProducerClosedError):
        await producer.send(Message("t", value=b"late"))


async def test_send_sync_times_out_with_a_typed_error() -> None:
    producer = AsyncKafkaProducer(KafkaProducer(UNREACHABLE, close_timeout=0.1))
    try:
        with pytest.raises(DeliveryError) as info:
            await producer.send_sync(Message("t", value=b"x"), timeout=0.2)
        assert info.value.code == "_TIMED_OUT"
    finally:
        await producer.close()
