"""Closing a producer or consumer ends its live kafka.yaml subscription at once (not at GC)."""

from __future__ import annotations

import asyncio

import pytest

from im_infra import coord, mq

from .conftest import unique

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("kind", ["producer", "consumer", "async_producer", "async_consumer"])
def test_close_ends_the_live_config_subscription(
    etcd_endpoints: str, kafka_brokers: str, kind: str
) -> None:
    env = unique("live")
    common = {"brokers": [kafka_brokers]}
    with coord.connect(etcd_endpoints, service=f"{env}-svc", env=env, timeout=3) as cp:
        client: mq.KafkaProducer | mq.KafkaConsumer | mq.AsyncKafkaProducer | mq.AsyncKafkaConsumer
        if kind == "producer":
            client = mq.new_producer(coord=cp, common=common)
        elif kind == "consumer":
            client = mq.new_consumer(group_id=env, coord=cp, common=common)
        elif kind == "async_producer":
            client = mq.new_async_producer(coord=cp, common=common)
        else:
            client = mq.new_async_consumer(group_id=env, coord=cp, common=common)
        assert len(cp.config._live) == 1 and cp.config._hub.watching
        if isinstance(client, mq.AsyncKafkaProducer | mq.AsyncKafkaConsumer):
            asyncio.run(client.close())
        else:
            client.close()
        # the client is still referenced: only close() can have ended the subscription
        assert cp.config._live == [] and not cp.config._hub.watching
        assert client is not None
