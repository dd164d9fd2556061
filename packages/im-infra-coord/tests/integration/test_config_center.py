"""Config center against the stack's etcd: documents, CAS, watches, typed live config."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, Field

from im_infra import coord
from im_infra.coord import ConfigError, ConfigEvent


class Kafka(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    brokers: list[str] = Field(default_factory=lambda: ["localhost:9092"])
    acks: str = "all"
    batch_size: int = Field(16384, alias="batchSize")


def test_get_set_delete_list(provider: coord.EtcdProvider) -> None:
    cfg = provider.config
    assert cfg.get("global/kafka.yaml") is None
    rev = cfg.set("global/kafka.yaml", {"acks": "1", "brokers": ["b:1"]})
    entry = cfg.get("global/kafka.yaml")
    assert entry is not None
    assert entry.mod_revision == rev
    assert entry.document() == {"acks": "1", "brokers": ["b:1"]}
    cfg.set("svc/db.json", {"dsn": "x"})
    assert cfg.get_document("svc/db.json") == {"dsn": "x"}
    assert cfg.get("svc/db.json").text.lstrip().startswith("{")  # type: ignore[union-attr]
    cfg.set("svc/raw.txt", b"\x00binary")
    assert [e.key for e in cfg.list()] == ["global/kafka.yaml", "svc/db.json", "svc/raw.txt"]
    assert [e.key for e in cfg.list("svc/")] == ["svc/db.json", "svc/raw.txt"]
    assert cfg.delete("svc/raw.txt") is True
    assert cfg.delete("svc/raw.txt") is False
    assert cfg.key("svc/db.json") == f"/im-infra/config/{cfg.env}/svc/db.json"


def test_set_rejects_malformed_yaml(provider: coord.EtcdProvider) -> None:
    with pytest.raises(ConfigError, match=r"global/kafka\.yaml is malformed"):
        provider.config.set("global/kafka.yaml", "acks: [1,\n")
    assert provider.config.get("global/kafka.yaml") is None


def test_compare_and_set_on_mod_revision(provider: coord.EtcdProvider) -> None:
    cfg = provider.config
    assert cfg.compare_and_set("k.yaml", "v: 1\n", 0) is True  # create-only
    assert cfg.compare_and_set("k.yaml", "v: 2\n", 0) is False
    current = cfg.get("k.yaml")
    assert current is not None
    assert cfg.compare_and_set("k.yaml", "v: 2\n", current.mod_revision) is True
    assert cfg.compare_and_set("k.yaml", "v: 3\n", current.mod_revision) is False  # stale
    assert cfg.get_document("k.yaml") == {"v": 2}


def test_watch_key_and_prefix(provider: coord.EtcdProvider) -> None:
    cfg = provider.config
    seen: list[ConfigEvent] = []
    done = threading.Event()

    def on_event(ev: ConfigEvent) -> None:
        seen.append(ev)
        if len(seen) == 3:
            done.set()

    w = cfg.watch("svc/", on_event, prefix=True)
    assert w.wait_connected(5)
    cfg.set("svc/a.yaml", "x: 1\n")
    cfg.set("other/b.yaml", "x: 1\n")  # outside the prefix
    cfg.set("svc/a.yaml", "x: 2\n")
    cfg.delete("svc/a.yaml")
    assert done.wait(5)
    w.cancel()
    assert [(e.kind, e.key) for e in seen] == [
        ("put", "svc/a.yaml"),
        ("put", "svc/a.yaml"),
        ("delete", "svc/a.yaml"),
    ]
    assert seen[1].entry is not None
    assert seen[1].entry.document() == {"x": 2}
    assert seen[0].revision < seen[1].revision < seen[2].revision


def test_watch_replays_from_start_revision(provider: coord.EtcdProvider) -> None:
    cfg = provider.config
    first = cfg.set("r.yaml", "n: 1\n")
    cfg.set("r.yaml", "n: 2\n")
    got: list[Any] = []
    done = threading.Event()

    def on_event(ev: ConfigEvent) -> None:
        assert ev.entry is not None
        got.append(ev.entry.document()["n"])
        if len(got) == 2:
            done.set()

    w = cfg.watch("r.yaml", on_event, start_revision=first)
    assert done.wait(5)
    w.cancel()
    assert got == [1, 2]


def test_load_component_config_from_etcd(
    provider: coord.EtcdProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("IM_INFRA_KAFKA_BROKERS")  # the environment layer would win
    svc = provider.service
    assert svc is not None
    provider.config.set("global/kafka.yaml", "brokers: [g:1]\nacks: '1'\nbatchSize: 10\n")
    provider.config.set(f"{svc}/kafka.yaml", "batchSize: 20\n")
    cfg = coord.load_component_config(
        "kafka", Kafka, service=svc, coord=provider, env=provider.env, overrides={"acks": "0"}
    )
    assert cfg == Kafka.model_validate({"brokers": ["g:1"], "acks": "0", "batchSize": 20})
    other = coord.load_component_config(
        "kafka", Kafka, service="someone-else", coord=provider, env=provider.env
    )
    assert other.batch_size == 10


def test_malformed_document_in_etcd_is_a_typed_error(provider: coord.EtcdProvider) -> None:
    svc = provider.service
    assert svc is not None
    key = provider.config.key(f"{svc}/kafka.yaml")
    provider.client.put(key, b"batchSize: [1,\n")  # bypasses set()'s validation
    with pytest.raises(ConfigError, match=f"{key} is malformed"):
        coord.load_component_config("kafka", Kafka, service=svc, coord=provider, env=provider.env)
    provider.client.put(key, b"batchSize: lots\n")
    with pytest.raises(ConfigError) as info:
        provider.config.component("kafka", Kafka)
    assert "batchSize" in str(info.value)
    assert key in str(info.value)


def test_live_config_updates_and_hooks(provider: coord.EtcdProvider) -> None:
    svc = provider.service
    provider.config.set("global/kafka.yaml", "acks: '1'\n")
    changes: list[tuple[str, str]] = []
    changed = threading.Event()
    with provider.config.component("kafka", Kafka, overrides={"brokers": ["o:1"]}) as live:
        assert live.source == "etcd"
        assert live.value.acks == "1"

        def on_change(old: Kafka, new: Kafka) -> None:
            changes.append((old.acks, new.acks))
            changed.set()

        live.on_change(on_change)
        assert live.wait_connected(5)
        provider.config.set(f"{svc}/kafka.yaml", "acks: '0'\n")
        assert changed.wait(5)
        assert live.value.acks == "0"
        assert live.value.brokers == ["o:1"]  # overrides still win
        # an invalid update is ignored: the last good value stays, no hook call
        changed.clear()
        provider.config.set(f"{svc}/kafka.yaml", "batchSize: nope\n")
        provider.config.set("global/kafka.yaml", "acks: '1'\nbatchSize: 7\n")  # still invalid
        provider.config.delete(f"{svc}/kafka.yaml")  # valid again: acks 1, batch 7
        assert changed.wait(5)
        assert (live.value.acks, live.value.batch_size) == ("1", 7)
        assert changes == [("1", "0"), ("0", "1")]
        rev = live.revision
        assert rev is not None
