"""kafka.yaml model (seed §6) and its mapping onto librdkafka properties."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from im_infra.mq import config as cfg
from im_infra.mq._internal.loading import to_aliases

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


def test_defaults_are_the_seed_document() -> None:
    assert cfg.KafkaConfig() == cfg.KafkaConfig.model_validate(SEED_DOC)
    dumped = cfg.KafkaConfig().model_dump(by_alias=True)
    dumped["common"]["security"]["sasl"]["password"] = ""
    # Beyond the seed: static membership, on by default, id derived unless set.
    assert dumped["consumer"].pop("staticMembership") is True
    assert dumped["consumer"].pop("groupInstanceId") == ""
    assert dumped["consumer"].pop("concurrency") == 1
    assert dumped["consumer"].pop("orderBy") == "key"
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
        ({"common": {"brokers": []}}, "common.brokers"),
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


def test_brokers_env_replaces_only_the_seed_default() -> None:
    env = {cfg.BROKERS_ENV: "127.0.0.1:9092, 127.0.0.1:9093"}
    applied = cfg.apply_brokers_env(cfg.KafkaConfig(), env)
    assert applied.common.brokers == ["127.0.0.1:9092", "127.0.0.1:9093"]
    configured = cfg.KafkaConfig.model_validate({"common": {"brokers": ["doc:1"]}})
    assert cfg.apply_brokers_env(configured, env).common.brokers == ["doc:1"]
    assert cfg.apply_brokers_env(cfg.KafkaConfig(), {}).common.brokers == list(cfg.DEFAULT_BROKERS)


def test_brokers_env_is_validated() -> None:
    with pytest.raises(ValidationError, match="not host:port"):
        cfg.apply_brokers_env(cfg.KafkaConfig(), {cfg.BROKERS_ENV: "nonsense"})


def test_to_aliases_rewrites_nested_snake_case() -> None:
    out = to_aliases(
        cfg.KafkaConfig,
        {
            "producer": {"linger_ms": 0, "compression": "none"},
            "common": {"client_id_prefix": "p", "security": {"sasl": {"mechanism": "PLAIN"}}},
            "unknown": {"x": 1},
        },
    )
    assert out == {
        "producer": {"lingerMs": 0, "compression": "none"},
        "common": {"clientIDPrefix": "p", "security": {"sasl": {"mechanism": "PLAIN"}}},
        "unknown": {"x": 1},
    }
