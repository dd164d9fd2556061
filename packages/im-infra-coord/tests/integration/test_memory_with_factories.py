"""``coord.testing.MemoryEtcd`` goes wherever a real provider is accepted: every component's
factory reads its document from it. No server needed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from im_infra import cache, coord, db, mq, uid
from im_infra.coord.testing import MemoryEtcd


@pytest.fixture
def provider(monkeypatch: pytest.MonkeyPatch) -> Iterator[coord.EtcdProvider]:
    monkeypatch.delenv("IM_INFRA_KAFKA_BROKERS", raising=False)
    monkeypatch.delenv("IM_INFRA_CONFIG_DIR", raising=False)
    with MemoryEtcd().connect(service="im-logic", env="test") as p:
        yield p


def test_mq_reads_kafka_yaml(provider: coord.EtcdProvider) -> None:
    provider.config.set("global/kafka.yaml", {"common": {"brokers": ["g:9092"]}})
    provider.config.set("im-logic/kafka.yaml", {"producer": {"lingerMs": 7}})
    cfg = mq.load_config("im-logic", coord=provider)
    assert cfg.common.brokers == ["g:9092"] and cfg.producer.linger_ms == 7


def test_cache_reads_redis_yaml(provider: coord.EtcdProvider) -> None:
    provider.config.set("im-logic/redis.yaml", {"keyPrefix": "logic/", "db": 4})
    cfg = cache.load_config("im-logic", coord=provider, env="test")
    assert cfg.prefix_for("im-logic") == "logic/" and cfg.db == 4
    c = cache.new("im-logic", coord=provider, env="test")  # no connection until a command
    assert c.key_prefix == "logic/"
    c.close()


def test_db_reads_db_yaml(provider: coord.EtcdProvider) -> None:
    provider.config.set("global/db.yaml", {"driver": "sqlite", "database": ":memory:"})
    with db.new("im-logic", coord=provider) as d:
        assert d.config.driver == "sqlite"


def test_uid_takes_its_worker_id(provider: coord.EtcdProvider) -> None:
    gen = uid.from_coord(provider, "im-logic-ids")
    first, second = gen.next_id(), gen.next_id()
    assert second > first
    held = provider.instance_for("im-logic-ids", max_id=uid.MAX_WORKER_ID).current_id
    assert held is not None and gen.worker_id == held
