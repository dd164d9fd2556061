from __future__ import annotations

import pytest
from pydantic import BaseModel, ConfigDict, Field

from im_infra.coord import ConfigError
from im_infra.coord._internal.documents import (
    Layer,
    deep_merge,
    dump_document,
    normalize_keys,
    parse_document,
    validate_layers,
)


class Producer(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    acks: str = "all"
    linger_ms: int = Field(5, alias="lingerMs")


class Kafka(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    brokers: list[str] = Field(default_factory=lambda: ["localhost:9092"])
    batch_size: int = Field(16384, alias="batchSize")
    producer: Producer = Field(default_factory=lambda: Producer.model_validate({}))
    extra: Producer | None = None


def test_parse_yaml_json_and_empty() -> None:
    assert parse_document(b"a: 1\nb: [x]\n", "k.yaml") == {"a": 1, "b": ["x"]}
    assert parse_document('{"a": 1}', "k.json") == {"a": 1}
    assert parse_document(b"", "k.yaml") == {}
    assert parse_document(b"  \n", "k.json") == {}


def test_parse_malformed_names_document_and_line() -> None:
    with pytest.raises(
        ConfigError, match=r"global/kafka\.yaml is malformed: mapping values .*line 2"
    ):
        parse_document(b"a: 1\nb: x: y\n", "global/kafka.yaml")
    with pytest.raises(ConfigError, match=r"x\.json is malformed"):
        parse_document(b"{bad", "x.json")


def test_parse_non_mapping_rejected() -> None:
    with pytest.raises(ConfigError, match="must be a mapping at top level, got list"):
        parse_document(b"- 1\n- 2\n", "k.yaml")


def test_dump_by_extension_round_trips() -> None:
    data = {"a": 1, "b": {"c": [1, 2]}}
    assert parse_document(dump_document(data, "x.json"), "x.json") == data
    assert parse_document(dump_document(data, "x.yaml"), "x.yaml") == data
    assert dump_document(data, "x.json").lstrip().startswith("{")


def test_deep_merge_recurses_and_replaces() -> None:
    base = {"a": {"x": 1, "y": 2}, "l": [1, 2], "s": "old"}
    top = {"a": {"y": 3}, "l": [9], "n": None}
    assert deep_merge(base, top) == {"a": {"x": 1, "y": 3}, "l": [9], "s": "old", "n": None}
    assert base["a"] == {"x": 1, "y": 2}  # inputs untouched


def test_normalize_keys_maps_names_to_aliases_recursively() -> None:
    out = normalize_keys(Kafka, {"batch_size": 1, "producer": {"linger_ms": 7}, "other": 1})
    assert out == {"batchSize": 1, "producer": {"lingerMs": 7}, "other": 1}
    assert normalize_keys(Kafka, {"extra": {"linger_ms": 1}}) == {"extra": {"lingerMs": 1}}


def test_later_layer_wins_whatever_spelling() -> None:
    layers = [
        Layer("etcd global/kafka.yaml", {"batchSize": 10, "producer": {"lingerMs": 1}}),
        Layer("overrides", {"batch_size": 20}),
    ]
    cfg = validate_layers(Kafka, layers, "kafka")
    assert cfg.batch_size == 20
    assert cfg.producer.linger_ms == 1
    assert cfg.producer.acks == "all"


def test_validation_error_names_source_field_and_problem() -> None:
    layers = [
        Layer("etcd /im-infra/config/dev/global/kafka.yaml", {"producer": {"lingerMs": "soon"}}),
        Layer("etcd /im-infra/config/dev/svc/kafka.yaml", {"batchSize": 1}),
    ]
    with pytest.raises(ConfigError) as info:
        validate_layers(Kafka, layers, "kafka")
    msg = str(info.value)
    assert "invalid kafka config" in msg
    assert "producer.lingerMs" in msg
    assert "global/kafka.yaml" in msg
    assert "'soon'" in msg
    assert "svc/kafka.yaml" not in msg
