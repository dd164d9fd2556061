"""Static membership by default: group.instance.id derived from a sticky coord instance ID."""

from __future__ import annotations

from typing import Any

import pytest

from im_infra import coord, mq
from im_infra.mq.membership import member_namespace

pytestmark = pytest.mark.integration


def test_ids_derived_from_coord_unique_and_released(
    kafka_brokers: str, etcd_endpoints: str, h: Any
) -> None:
    group = h.unique("g")
    service = h.unique("svc")
    with coord.connect(etcd_endpoints) as provider:
        cfg = h.overrides(kafka_brokers)
        first = mq.new_consumer(service, group, coord=provider, **cfg)
        second = mq.new_consumer(service, group, coord=provider, **cfg)
        ids = [c.properties["group.instance.id"] for c in (first, second)]
        assert ids == [f"{service}-0", f"{service}-1"]
        prefix = f"/im-infra/instance/{member_namespace(service, group)}/"
        assert len(provider.client.range(prefix, prefix=True).kvs) == 2
        first.close()
        second.close()
        assert provider.client.range(prefix, prefix=True).kvs == []


def test_explicit_id_escape_hatch_and_opt_out(
    kafka_brokers: str, etcd_endpoints: str, h: Any
) -> None:
    group = h.unique("g")
    cfg: dict[str, Any] = {"common": {"brokers": [kafka_brokers]}}
    with coord.connect(etcd_endpoints) as provider:
        explicit = mq.new_consumer(
            "mq-it", group, coord=provider, consumer={"groupInstanceId": "pod-7"}, **cfg
        )
        raw = mq.new_consumer(
            "mq-it", group, coord=provider, rdkafka_config={"group.instance.id": "raw-1"}, **cfg
        )
        dynamic = mq.new_consumer(
            "mq-it",
            group,
            coord=provider,
            consumer={"staticMembership": False},
            **cfg,
        )
        try:
            assert explicit.properties["group.instance.id"] == "pod-7"
            assert raw.properties["group.instance.id"] == "raw-1"
            assert "group.instance.id" not in dynamic.properties
        finally:
            for c in (explicit, raw, dynamic):
                c.close()


def test_without_config_center_joins_dynamically(
    kafka_brokers: str, h: Any, monkeypatch: pytest.MonkeyPatch, logs: Any
) -> None:
    monkeypatch.delenv("IM_INFRA_ETCD_ENDPOINTS", raising=False)
    with mq.new_consumer("mq-it", h.unique("g"), **h.overrides(kafka_brokers)) as consumer:
        assert "group.instance.id" not in consumer.properties
    assert any("without static membership" in r["msg"] for r in logs.records())
