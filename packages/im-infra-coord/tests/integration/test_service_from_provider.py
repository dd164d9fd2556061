"""Issue 14, item 2: with an explicit provider connected for a service, every factory takes the
service name from it (the name is not given twice); documents are the service's own in etcd."""

from __future__ import annotations

import pytest

from im_infra import cache, coord, db, mq


def test_factories_take_the_service_name_from_the_provider(
    etcd_endpoints: str, kafka_brokers: str, redis_url: str, unique: str
) -> None:
    service = f"svc-{unique}"
    redis_hostport = redis_url.split("://", 1)[1].split("/", 1)[0]
    with coord.connect(etcd_endpoints.split(","), service=service, env=unique) as provider:
        root = f"/im-infra/config/{unique}/{service}"
        provider.config.set(
            f"{root}/kafka.yaml",
            f"common:\n  brokers: [{kafka_brokers.split(',')[0]}]\n  clientIDPrefix: {unique}\n",
        )
        provider.config.set(
            f"{root}/redis.yaml", f"address: {redis_hostport}\nkeyPrefix: 'p-{unique}:'\n"
        )
        provider.config.set(f"{root}/db.yaml", "driver: sqlite\ndatabase: ':memory:'\n")

        with mq.new_producer(coord=provider) as producer:
            assert producer.properties["client.id"] == f"{unique}-{service}"
        with mq.new_consumer(group_id=f"g-{unique}", coord=provider) as consumer:
            assert consumer.properties["client.id"].endswith(service)
        with cache.new(coord=provider) as c:
            assert c.service == service
            assert c.key_prefix == f"p-{unique}:"
        with db.new(coord=provider) as d:
            assert d.config.driver == "sqlite"

        # the explicit name still wins over the provider's
        with cache.new("other", coord=provider) as c:
            assert c.service == "other"


def test_no_name_anywhere_is_a_config_error(etcd_endpoints: str, unique: str) -> None:
    with coord.connect(etcd_endpoints.split(","), env=unique) as provider:
        assert provider.service is None or provider.service == ""
        with pytest.raises(cache.CacheConfigError, match="service name"):
            cache.new(coord=provider)
        with pytest.raises(mq.ConfigError, match="service name"):
            mq.new_producer(coord=provider)
        with pytest.raises(db.ConfigError, match="service name"):
            db.new(coord=provider)


def test_uid_takes_the_service_name_from_the_provider(etcd_endpoints: str, unique: str) -> None:
    from im_infra import uid

    service = f"svc-{unique}"
    with (
        coord.connect(etcd_endpoints.split(","), service=service, env=unique) as provider,
        uid.from_coord(coord=provider, release_on_close=True) as ids,
    ):
        assert provider.instance_for(service).current_id == ids.worker_id  # the service's ID
        assert ids.next_id() > 0
