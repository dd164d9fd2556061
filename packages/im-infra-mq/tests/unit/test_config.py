"""kafka.yaml model (seed §6) and its mapping onto librdkafka properties."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from im_infra import coord, mq
from im_infra.mq import config as cfg

SEED_DOC = {
    "common": {
        "brokers": ["kafka-1:9092", "kafka-2:9092", "kafka-3:9092"],
        "clientIDPrefix": "gochat",
        "security": {
            "sasl": {"mechanism": "", "username": "", "password": ""},
            "ssl": {
                "ca_cert_file": "",
                "client_cert_file": "",
                "client_key_file": "",
                "insecure_skip_verify": False,
            },
        },
    },
    "producer": {
        "requiredAcks": -1,
        "enableIdempotence": True,
        "compression": "lz4",
        "batchSize": 16384,
        "lingerMs": 5,
    },
    "consumer": {
        "autoCommitIntervalMs": 5000,
        "autoOffsetReset": "latest",
        "sessionTimeoutMs": 30000,
        "heartbeatIntervalMs": 10000,
    },
}


def test_defaults_are_the_seed_document_except_the_placeholder_brokers() -> None:
    # the seed's kafka-1..3:9092 are container names, not a usable default: no brokers by
    # default, and a client without any is a ConfigError (test below)
    assert cfg.KafkaConfig().common.brokers == []
    seed = cfg.KafkaConfig.model_validate(SEED_DOC)
    assert cfg.KafkaConfig.model_validate({"common": {"brokers": seed.common.brokers}}) == seed
    dumped = cfg.KafkaConfig().model_dump(by_alias=True)
    dumped["common"]["security"]["sasl"]["password"] = ""
    # Beyond the seed: static membership, on by default, id derived unless set.
    assert dumped["consumer"].pop("staticMembership") is True
    assert dumped["consumer"].pop("groupInstanceId") == ""
    assert dumped["consumer"].pop("concurrency") == 1
    assert dumped["consumer"].pop("orderBy") == "key"
    assert dumped["consumer"].pop("retryTopics") == {"delaysMs": (), "deadLetter": True}
    dumped["common"]["brokers"] = ["kafka-1:9092", "kafka-2:9092", "kafka-3:9092"]
    assert dumped == SEED_DOC


def test_group_instance_id_maps_to_librdkafka_unless_static_membership_is_off() -> None:
    doc = {"consumer": {"groupInstanceId": "pod-3"}}
    props = cfg.consumer_properties(cfg.KafkaConfig.model_validate(doc), "svc", "g")
    assert props["group.instance.id"] == "pod-3"
    off = {"consumer": {"groupInstanceId": "pod-3", "staticMembership": False}}
    props = cfg.consumer_properties(cfg.KafkaConfig.model_validate(off), "svc", "g")
    assert "group.instance.id" not in props
    derived = cfg.consumer_properties(cfg.KafkaConfig(), "svc", "g")
    assert "group.instance.id" not in derived  # the factory derives it from coord


def test_bad_group_instance_id_is_rejected_by_name() -> None:
    with pytest.raises(ValidationError, match="groupInstanceId"):
        cfg.KafkaConfig.model_validate({"consumer": {"groupInstanceId": "pod 3/x"}})


def test_snake_case_names_are_accepted() -> None:
    model = cfg.KafkaConfig.model_validate(
        {"producer": {"linger_ms": 0, "batch_size": 1}, "common": {"client_id_prefix": "x"}}
    )
    assert model.producer.linger_ms == 0
    assert model.producer.batch_size == 1
    assert model.common.client_id_prefix == "x"


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({"producer": {"lingerMS": 5}}, "producer.lingerMS"),
        ({"producer": {"compression": "brotli"}}, "producer.compression"),
        ({"producer": {"requiredAcks": 2}}, "producer.requiredAcks"),
        ({"consumer": {"autoOffsetReset": "middle"}}, "consumer.autoOffsetReset"),
        ({"common": {"brokers": ["no-port"]}}, "common.brokers"),
        ({"common": {"security": {"sasl": {"mechanism": "MD5"}}}}, "common.security.sasl"),
    ],
)
def test_bad_fields_are_named(doc: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        cfg.KafkaConfig.model_validate(doc)
    locs = {".".join(str(p) for p in e["loc"]) for e in info.value.errors()}
    assert any(loc.startswith(field) for loc in locs), locs


def test_cross_field_rules() -> None:
    with pytest.raises(ValidationError, match="requires requiredAcks=-1"):
        cfg.KafkaConfig.model_validate({"producer": {"requiredAcks": 1}})
    cfg.KafkaConfig.model_validate({"producer": {"requiredAcks": 1, "enableIdempotence": False}})
    with pytest.raises(ValidationError, match="heartbeatIntervalMs"):
        cfg.KafkaConfig.model_validate(
            {"consumer": {"sessionTimeoutMs": 6000, "heartbeatIntervalMs": 6000}}
        )
    with pytest.raises(ValidationError, match=r"sasl\.username is required"):
        cfg.KafkaConfig.model_validate({"common": {"security": {"sasl": {"mechanism": "PLAIN"}}}})
    with pytest.raises(ValidationError, match="must be set together"):
        cfg.KafkaConfig.model_validate(
            {"common": {"security": {"ssl": {"client_cert_file": "/c.pem"}}}}
        )


def test_producer_properties() -> None:
    model = cfg.KafkaConfig.model_validate({"common": {"brokers": ["a:1", "b:2"]}})
    props = cfg.producer_properties(model, "im-gateway")
    assert props == {
        "bootstrap.servers": "a:1,b:2",
        "client.id": "gochat-im-gateway",
        "acks": -1,
        "enable.idempotence": True,
        "compression.type": "lz4",
        "batch.size": 16384,
        "linger.ms": 5,
    }


def test_consumer_properties_are_at_least_once() -> None:
    props = cfg.consumer_properties(cfg.KafkaConfig(), "im-logic", "im-logic-group")
    assert props["group.id"] == "im-logic-group"
    assert props["client.id"] == "gochat-im-logic"
    assert props["enable.auto.commit"] is True
    assert props["enable.auto.offset.store"] is False
    assert props["auto.commit.interval.ms"] == 5000
    assert props["auto.offset.reset"] == "latest"
    assert props["session.timeout.ms"] == 30000
    assert props["heartbeat.interval.ms"] == 10000


def test_sasl_plaintext_mapping() -> None:
    model = cfg.KafkaConfig.model_validate(
        {
            "common": {
                "security": {
                    "sasl": {"mechanism": "SCRAM-SHA-512", "username": "u", "password": "s3cr3t-pw"}
                }
            }
        }
    )
    props = cfg.admin_properties(model, "svc")
    assert props["security.protocol"] == "SASL_PLAINTEXT"
    assert props["sasl.mechanisms"] == "SCRAM-SHA-512"
    assert props["sasl.username"] == "u"
    assert props["sasl.password"] == "s3cr3t-pw"
    assert "s3cr3t-pw" not in repr(model)


def test_sasl_ssl_mapping() -> None:
    model = cfg.KafkaConfig.model_validate(
        {
            "common": {
                "security": {
                    "sasl": {"mechanism": "PLAIN", "username": "u", "password": "p"},
                    "ssl": {
                        "ca_cert_file": "/ca.pem",
                        "client_cert_file": "/c.pem",
                        "client_key_file": "/k.pem",
                        "insecure_skip_verify": True,
                    },
                }
            }
        }
    )
    props = cfg.common_properties(model, "svc")
    assert props["security.protocol"] == "SASL_SSL"
    assert props["ssl.ca.location"] == "/ca.pem"
    assert props["ssl.certificate.location"] == "/c.pem"
    assert props["ssl.key.location"] == "/k.pem"
    assert props["enable.ssl.certificate.verification"] is False
    assert props["ssl.endpoint.identification.algorithm"] == "none"


def test_ssl_only_mapping() -> None:
    model = cfg.KafkaConfig.model_validate(
        {"common": {"security": {"ssl": {"ca_cert_file": "/ca.pem"}}}}
    )
    props = cfg.common_properties(model, "svc")
    assert props["security.protocol"] == "SSL"
    assert "sasl.mechanisms" not in props
    assert "enable.ssl.certificate.verification" not in props


def test_no_security_means_no_protocol_property() -> None:
    props = cfg.common_properties(cfg.KafkaConfig(), "svc")
    assert "security.protocol" not in props


def test_brokers_env_wins_over_documents_and_loses_to_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "kafka.yaml").write_text("common:\n  brokers: [doc:1]\n")
    monkeypatch.setenv("IM_INFRA_CONFIG_DIR", str(tmp_path))
    assert mq.load_config("svc").common.brokers == ["doc:1"]
    monkeypatch.setenv(cfg.BROKERS_ENV, "127.0.0.1:9092, 127.0.0.1:9093")
    assert mq.load_config("svc").common.brokers == ["127.0.0.1:9092", "127.0.0.1:9093"]
    # the canonical name of the naming rule wins over the alias
    monkeypatch.setenv("IM_INFRA_KAFKA_COMMON__BROKERS", "canon:1")
    assert mq.load_config("svc").common.brokers == ["canon:1"]
    assert mq.load_config("svc", common={"brokers": ["kw:1"]}).common.brokers == ["kw:1"]


def test_every_field_has_an_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cfg.BROKERS_ENV, "b:1")
    monkeypatch.setenv("IM_INFRA_KAFKA_PRODUCER__LINGER_MS", "42")
    monkeypatch.setenv("IM_INFRA_KAFKA_CONSUMER__AUTO_OFFSET_RESET", "earliest")
    loaded = mq.load_config("svc")
    assert loaded.producer.linger_ms == 42
    assert loaded.consumer.auto_offset_reset == "earliest"


def test_missing_brokers_is_a_config_error_naming_the_ways_to_set_them() -> None:
    with pytest.raises(mq.ConfigError) as info:
        mq.new_producer("svc")
    text = str(info.value)
    assert "common.brokers" in text
    assert cfg.BROKERS_ENV in text
    assert "IM_INFRA_KAFKA_COMMON__BROKERS" in text
    assert "kafka.yaml" in text
    assert isinstance(info.value, coord.ConfigError)  # the shared root
    assert isinstance(info.value, mq.MQError)


def test_brokers_env_is_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cfg.BROKERS_ENV, "nonsense")
    with pytest.raises(mq.ConfigError, match=f"environment variable {cfg.BROKERS_ENV}.*host:port"):
        mq.load_config("svc")


def test_snake_case_override_replaces_a_camel_case_document_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "kafka.yaml").write_text("common: {brokers: [d:1]}\nproducer: {lingerMs: 9}\n")
    monkeypatch.setenv("IM_INFRA_CONFIG_DIR", str(tmp_path))
    assert mq.load_config("svc", producer={"linger_ms": 0}).producer.linger_ms == 0


def test_model_still_validates_broker_addresses() -> None:
    with pytest.raises(ValidationError, match="not host:port"):
        cfg.KafkaConfig.model_validate({"common": {"brokers": ["nonsense"]}})
