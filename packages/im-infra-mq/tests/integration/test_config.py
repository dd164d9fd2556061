"""kafka.yaml through coord: local config dir, per-service override, SASL, bad documents."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from im_infra import coord, mq

pytestmark = pytest.mark.integration

GLOBAL_DOC = """
common:
  brokers: ["{brokers}"]
  clientIDPrefix: "acme"
  security:
    sasl:
      mechanism: "SCRAM-SHA-256"
      username: "svc-user"
      password: {{fromEnv: IT_KAFKA_SASL_PASSWORD}}  # doubled braces: str.format
producer:
  lingerMs: 20
consumer:
  sessionTimeoutMs: 6000
  heartbeatIntervalMs: 1500
"""

SERVICE_DOC = """
producer:
  compression: "zstd"
"""


@pytest.fixture
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Documents from a local directory: no config center (no default provider) and none of the
    stack's IM_INFRA_KAFKA_* variables (the environment layer wins over documents)."""
    monkeypatch.setenv("IM_INFRA_CONFIG_DIR", str(tmp_path))
    monkeypatch.delenv("IM_INFRA_ETCD_ENDPOINTS", raising=False)
    monkeypatch.delenv(mq.BROKERS_ENV, raising=False)
    monkeypatch.setenv("IT_KAFKA_SASL_PASSWORD", "top-secret-pw")  # the document references it
    coord.close_default_provider()
    yield tmp_path
    coord.close_default_provider()


def test_global_and_service_documents_reach_librdkafka(config_dir: Path) -> None:
    (config_dir / "global").mkdir()
    (config_dir / "global" / "kafka.yaml").write_text(GLOBAL_DOC.format(brokers="10.0.0.1:9092"))
    (config_dir / "im-logic").mkdir()
    (config_dir / "im-logic" / "kafka.yaml").write_text(SERVICE_DOC)

    producer = mq.new_producer("im-logic", producer={"batch_size": 32768})
    try:
        props = producer.properties
    finally:
        producer.close(timeout=0)
    assert props["bootstrap.servers"] == "10.0.0.1:9092"
    assert props["client.id"] == "acme-im-logic"
    assert props["security.protocol"] == "SASL_PLAINTEXT"
    assert props["sasl.mechanisms"] == "SCRAM-SHA-256"
    assert props["sasl.username"] == "svc-user"
    assert props["sasl.password"] == "***"  # set in librdkafka, masked when shown
    assert props["linger.ms"] == 20  # global document
    assert props["compression.type"] == "zstd"  # service document
    assert props["batch.size"] == 32768  # keyword override (snake_case)

    other = mq.load_config("im-gateway")
    assert other.producer.compression == "lz4"  # the service document is per service
    assert other.common.security.sasl.password.get_secret_value() == "top-secret-pw"

    consumer = mq.new_consumer("im-logic", "grp")
    try:
        cprops = consumer.properties
    finally:
        consumer.close()
    assert cprops["sasl.mechanisms"] == "SCRAM-SHA-256"
    assert cprops["session.timeout.ms"] == 6000
    assert cprops["group.id"] == "grp"
    assert cprops["client.id"] == "acme-im-logic"


def test_sasl_and_ssl_from_overrides() -> None:
    admin = mq.new_admin_client(
        "svc",
        common={
            "brokers": ["127.0.0.1:9"],
            "security": {
                "sasl": {"mechanism": "PLAIN", "username": "u", "password": "pw-123"},
                "ssl": {"insecure_skip_verify": True},
            },
        },
    )
    props = admin.properties
    admin.close()
    assert props["security.protocol"] == "SASL_SSL"
    assert props["sasl.mechanisms"] == "PLAIN"
    assert props["enable.ssl.certificate.verification"] is False
    assert "pw-123" not in repr(props)


def test_bad_kafka_yaml_fails_naming_file_and_field(config_dir: Path) -> None:
    (config_dir / "kafka.yaml").write_text("producer:\n  compression: brotli\n")
    with pytest.raises(mq.ConfigError) as info:
        mq.new_producer("svc")
    text = str(info.value)
    assert "compression" in text
    assert "kafka" in text
    assert isinstance(info.value, coord.ConfigError)  # the shared root


def test_unknown_key_in_kafka_yaml_is_rejected(config_dir: Path) -> None:
    (config_dir / "kafka.yaml").write_text("consumer:\n  autoCommitIntervalMS: 10\n")
    with pytest.raises(mq.ConfigError, match="autoCommitIntervalMS"):
        mq.new_consumer("svc", "g")


def test_malformed_yaml_is_a_config_error(config_dir: Path) -> None:
    (config_dir / "kafka.yaml").write_text("common: [unclosed\n")
    with pytest.raises(mq.ConfigError, match="kafka"):
        mq.load_config("svc")


def test_bad_override_and_bad_rdkafka_property() -> None:
    with pytest.raises(mq.ConfigError, match="lingerMs"):
        mq.new_producer("svc", producer={"lingerMs": -1})
    with pytest.raises(mq.ConfigError, match="not a librdkafka property"):
        mq.new_producer("svc", rdkafka_config={"lingerms": 5})
    with pytest.raises(mq.ConfigError, match="group_id"):
        mq.new_consumer("svc", "")


def test_brokers_env_wins_over_documents(monkeypatch: pytest.MonkeyPatch, config_dir: Path) -> None:
    (config_dir / "kafka.yaml").write_text('common:\n  brokers: ["doc-host:9092"]\n')
    assert mq.load_config("svc").common.brokers == ["doc-host:9092"]
    monkeypatch.setenv(mq.BROKERS_ENV, "127.0.0.1:1111,127.0.0.1:2222")
    assert mq.load_config("svc").common.brokers == ["127.0.0.1:1111", "127.0.0.1:2222"]


def test_config_from_etcd(etcd_endpoints: str, kafka_brokers: str, h: Any) -> None:
    service = h.unique("svc")
    with coord.connect([etcd_endpoints], service=service) as provider:
        key = f"/im-infra/config/dev/{service}/kafka.yaml"
        provider.config.set(key, b"common:\n  clientIDPrefix: from-etcd\n")
        try:
            config = mq.load_config(service, coord=provider, common={"brokers": [kafka_brokers]})
        finally:
            provider.config.delete(key)
    assert config.common.client_id_prefix == "from-etcd"
    assert mq.client_id(config, service) == f"from-etcd-{service}"
