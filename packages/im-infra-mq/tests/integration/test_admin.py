"""AdminClient on the stack broker."""

from __future__ import annotations

from typing import Any

import pytest

from im_infra import mq

pytestmark = pytest.mark.integration


def test_topic_lifecycle(admin: mq.KafkaAdminClient, h: Any) -> None:
    name = h.unique("admin")
    admin.create_topic(name, 3, 1)
    try:
        admin.create_topic(name, 3, 1)  # same partition count: idempotent
        assert admin.describe_topic(name) == mq.TopicInfo(name, 3, 1)
        assert name in admin.list_topics()
        assert all(not t.startswith("__") for t in admin.list_topics())
        with pytest.raises(mq.TopicExistsError, match="exists with 3 partitions, not the 5"):
            admin.create_topic(name, 5, 1)
    finally:
        admin.delete_topic(name)
    assert name not in admin.list_topics()
    with pytest.raises(mq.TopicNotFoundError, match=name):
        admin.describe_topic(name)
    with pytest.raises(mq.TopicNotFoundError, match=name):
        admin.delete_topic(name)


def test_invalid_arguments_and_closed_client(kafka_brokers: str) -> None:
    client = mq.new_admin_client("mq-it", common={"brokers": [kafka_brokers]})
    assert isinstance(client, mq.AdminClient)
    with pytest.raises(mq.AdminError, match="must be >= 1"):
        client.create_topic("x", 0, 1)
    client.close()
    client.close()
    with pytest.raises(mq.AdminError, match="closed"):
        client.list_topics()


def test_unreachable_broker_is_a_clear_admin_error() -> None:
    client = mq.new_admin_client("mq-it", common={"brokers": ["127.0.0.1:9"]}, timeout=1.0)
    with pytest.raises(mq.AdminError, match="cluster metadata"):
        client.list_topics()
