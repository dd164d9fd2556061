"""The producer core's pieces without a broker: delivery-report mapping, back-pressure decision,
message construction, the deprecated aliases of the old asyncio-only methods."""

from __future__ import annotations

import dataclasses

import pytest
from confluent_kafka import KafkaError

from im_infra.mq import AuthenticationError, DeliveryError, KafkaProducer, Message, QueueFullError
from im_infra.mq._internal.client import AuthFailure
from im_infra.mq._internal.delivery import delivery_error
from im_infra.mq._internal.metrics import ProducerMetrics
from im_infra.mq._internal.producer_core import Backpressure

UNREACHABLE = {"bootstrap.servers": "127.0.0.1:9", "client.id": "unit-core", "linger.ms": 0}


def test_a_purged_message_is_retriable_and_names_the_purge() -> None:
    err = delivery_error(KafkaError(KafkaError._PURGE_QUEUE), "t")
    assert err.code == "_PURGE_QUEUE" and err.retriable
    assert "before the producer closed" in str(err)


def test_a_purged_message_of_a_replaced_producer_carries_the_fatal_cause() -> None:
    fatal = KafkaError(KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER, "lost", fatal=True)
    err = delivery_error(KafkaError(KafkaError._PURGE_INFLIGHT), "t", fatal)
    assert err.code == "OUT_OF_ORDER_SEQUENCE_NUMBER" and err.retriable
    assert "was replaced" in str(err)


def test_a_plain_failure_keeps_librdkafka_s_name_and_retriable_flag() -> None:
    err = delivery_error(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "too big"), "t")
    assert type(err) is DeliveryError
    assert err.code == "MSG_SIZE_TOO_LARGE" and not err.retriable
    assert "too big" in str(err)


def test_a_message_purged_after_a_refused_login_is_an_authentication_error() -> None:
    auth = AuthFailure()
    auth.record(KafkaError(KafkaError._AUTHENTICATION, "bad password for user x"))
    err = delivery_error(KafkaError(KafkaError._PURGE_QUEUE), "t", None, auth)
    assert isinstance(err, AuthenticationError)
    assert "SASL authentication failed" in str(err)


def test_backpressure_pauses_grow_to_a_cap_then_time_out() -> None:
    wait = Backpressure(60.0, "t", ProducerMetrics())
    pauses = [wait.next_pause() for _ in range(10)]
    assert pauses[:3] == [0.001, 0.002, 0.004]
    assert max(pauses) == 0.05
    with pytest.raises(QueueFullError, match=r"stayed full for 0\.0s \(topic 't'\)"):
        Backpressure(0.0, "t", ProducerMetrics()).next_pause()


def test_message_defaults_are_fresh_and_fields_keep_their_order() -> None:
    a, b = Message("t"), Message("t")
    a.headers["x"] = b"1"
    assert b.headers == {}  # never a shared dict
    full = Message("t", b"k", b"v", {"h": b"1"}, 2, 7, 1000)
    assert (full.key, full.value, full.headers, full.partition, full.offset) == (
        b"k",
        b"v",
        {"h": b"1"},
        2,
        7,
    )
    assert full.timestamp_ms == 1000
    assert dataclasses.replace(full, value=b"w") == Message(
        "t", b"k", b"w", {"h": b"1"}, 2, 7, 1000
    )


def test_the_old_asyncio_only_methods_warn_and_still_work() -> None:
    producer = KafkaProducer(UNREACHABLE, close_timeout=0.1)
    try:
        msg = Message("t", value=b"x")
        with pytest.warns(DeprecationWarning, match="prepare"):
            pending = producer.prepare(msg, None)
        with pytest.warns(DeprecationWarning, match="try_produce"):
            assert producer.try_produce(msg, pending)
        with pytest.warns(DeprecationWarning, match="backpressure"):
            assert producer.backpressure("t").next_pause() == 0.001
        # queued (librdkafka's len() also counts its own requests waiting for the broker, so
        # it can be more than the one message: seen in CI)
        assert len(producer) >= 1
    finally:
        producer.close()
