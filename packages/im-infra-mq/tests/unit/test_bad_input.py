"""Issue #15 item 8: bad input is an mq error naming the argument, not a TypeError /
UnicodeEncodeError from confluent-kafka (or a crash inside it), for the blocking and the asyncio
producer, send_batch, subscribe and the admin client; timeouts are builtin TimeoutErrors."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest

from im_infra import mq
from im_infra.mq import InvalidArgumentError, KafkaProducer, Message

UNREACHABLE = {"bootstrap.servers": "127.0.0.1:9", "client.id": "unit", "linger.ms": 0}

BAD_MESSAGES = [
    (Message(None), "message topic must be a str, not NoneType"),  # type: ignore[arg-type]
    (Message(7), "message topic must be a str, not int"),  # type: ignore[arg-type]
    (Message("t", value=5), "message value must be bytes, str or None, not int"),  # type: ignore[arg-type]
    (Message("t", value={"a": 1}), "message value must be bytes, str or None, not dict"),  # type: ignore[arg-type]
    (Message("t", key="\ud800"), "message key is not encodable as UTF-8"),
    (Message("t", value="\udfff"), "message value is not encodable as UTF-8"),
    (Message("t", headers={"h": 5}), "header 'h': value must be bytes, str or None, not int"),  # type: ignore[dict-item]
    (Message("t", headers={"h": "\ud800"}), "header 'h': value is not encodable as UTF-8"),  # type: ignore[dict-item]
    (Message("t", headers={"\ud800": b"x"}), "header name '\\ud800' is not encodable as UTF-8"),
    (Message("t", headers={5: b"x"}), "header name must be a str, not int"),  # type: ignore[dict-item]
    (Message("t", headers=[("a", b"b")]), "headers must be a dict"),  # type: ignore[arg-type]
    (Message("t", partition="x"), "message partition must be an int or None, not str"),  # type: ignore[arg-type]
]


@pytest.fixture
def producer() -> Iterator[KafkaProducer]:
    p = KafkaProducer(UNREACHABLE, close_timeout=0.1)
    yield p
    p.close()


@pytest.mark.parametrize(("msg", "reason"), BAD_MESSAGES)
def test_send_names_the_bad_field(producer: KafkaProducer, msg: Message, reason: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        producer.send(msg)
    assert reason in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(("msg", "reason"), BAD_MESSAGES)
def test_send_batch_names_the_bad_field(producer: KafkaProducer, msg: Message, reason: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        producer.send_batch([Message("t", value=b"ok"), msg])
    assert reason in str(info.value)
    assert info.value.queued == 1


async def test_async_send_names_the_bad_field() -> None:
    async with mq.AsyncKafkaProducer(KafkaProducer(UNREACHABLE, close_timeout=0.1)) as producer:
        for msg, reason in BAD_MESSAGES:
            with pytest.raises(InvalidArgumentError) as info:
                await producer.send(msg)
            assert reason in str(info.value)


@pytest.mark.parametrize(
    ("topics", "reason"),
    [
        ([""], "topics[0] must not be empty"),
        (["ok", None], "topics[1] must be a str, not NoneType"),
        (["\ud800"], "is not encodable as UTF-8"),
        (5, "topics must be a list of str, not int"),
    ],
)
def test_subscribe_names_the_bad_topic(topics: Any, reason: str) -> None:
    consumer = mq.KafkaConsumer({"bootstrap.servers": "127.0.0.1:9", "group.id": "unit"})
    try:
        with pytest.raises(InvalidArgumentError) as info:
            consumer.subscribe(topics, lambda m: None)
        assert reason in str(info.value)
    finally:
        consumer.close()


@pytest.fixture
def silent_broker() -> Iterator[str]:
    """A port that accepts connections and never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield f"127.0.0.1:{s.getsockname()[1]}"


def test_admin_timeout_is_a_typed_timeout(silent_broker: str) -> None:
    admin = mq.KafkaAdminClient({"bootstrap.servers": silent_broker}, timeout=0.5)
    try:
        for call in (admin.create_topic, admin.delete_topic):
            with pytest.raises(mq.AdminTimeoutError) as info:
                call("t-timeout")
            assert isinstance(info.value, TimeoutError)
            assert isinstance(info.value, mq.AdminError)
    finally:
        admin.close()


@pytest.mark.parametrize(
    ("call", "reason"),
    [
        (lambda a: a.create_topic(None), "name must be a str, not NoneType"),
        (lambda a: a.create_topic(""), "name must not be empty"),
        (lambda a: a.create_topic("t", "3"), "must be >= 1"),
        (lambda a: a.delete_topic(5), "name must be a str, not int"),
        (lambda a: a.describe_topic(""), "name must not be empty"),
    ],
)
def test_admin_names_the_bad_argument(silent_broker: str, call: Any, reason: str) -> None:
    admin = mq.KafkaAdminClient({"bootstrap.servers": silent_broker}, timeout=0.5)
    try:
        with pytest.raises(mq.MQError) as info:  # InvalidArgumentError, or AdminError
            call(admin)
        assert reason in str(info.value)
    finally:
        admin.close()


def test_send_timeout_is_a_builtin_timeout() -> None:
    assert issubclass(mq.SendTimeoutError, TimeoutError)
