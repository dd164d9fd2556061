"""Message, RetryPolicy and property redaction."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError

from im_infra.mq import (
    AdminError,
    AuthenticationError,
    ConsumerError,
    DeliveryError,
    Message,
    RetryPolicy,
)
from im_infra.mq._internal.client import AuthFailure, redacted


def test_message_defaults_and_trace_id() -> None:
    msg = Message("t", key=b"k", value=b"v")
    assert msg.headers == {}
    assert msg.trace_id is None
    assert msg.partition is None
    msg.headers["trace_id"] = b"abc"
    assert msg.trace_id == "abc"


def test_messages_do_not_share_headers() -> None:
    a, b = Message("t"), Message("t")
    a.headers["x"] = b"1"
    assert b.headers == {}


def test_retry_policy_backoff() -> None:
    policy = RetryPolicy(max_attempts=5, backoff=0.1, multiplier=2.0, max_backoff=0.3)
    assert [policy.pause(i) for i in range(1, 5)] == pytest.approx([0.1, 0.2, 0.3, 0.3])


@pytest.mark.parametrize(
    "kwargs",
    [{"max_attempts": 0}, {"backoff": -1.0}, {"multiplier": 0.5}, {"max_backoff": -1.0}],
)
def test_retry_policy_rejects_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="RetryPolicy"):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_redacted_masks_secrets_and_drops_callbacks() -> None:
    props = {
        "sasl.password": "hunter2",
        "ssl.key.password": "x",
        "sasl.username": "u",
        "error_cb": print,
        "linger.ms": 5,
    }
    assert redacted(props) == {
        "sasl.password": "***",
        "ssl.key.password": "***",
        "sasl.username": "u",
        "linger.ms": 5,
    }


def test_auth_failure_records_only_authentication_errors() -> None:
    auth = AuthFailure()
    auth.record(KafkaError(KafkaError._TRANSPORT, "connection refused"))
    assert auth.error("x") is None
    assert auth.take_fresh() is False
    auth.record(KafkaError(KafkaError._AUTHENTICATION, "SCRAM failed: unknown-user"))
    assert auth.take_fresh() is True
    assert auth.take_fresh() is False  # acted on once
    error = auth.error("send to 't'")
    assert isinstance(error, AuthenticationError)
    # one type, caught by each operation family's handler
    assert isinstance(error, DeliveryError | AdminError | ConsumerError)
    assert error.code == "_AUTHENTICATION"
    assert error.retriable is False
    assert "SASL authentication failed: SCRAM failed: unknown-user" in str(error)
