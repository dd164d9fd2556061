"""Outbox metrics through the OpenTelemetry SDK: backlog and oldest age from the relay's
stats, published and failed counters, per outbox table (MariaDB, PostgreSQL, SQLite)."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import MetaData

from im_infra import db

pytestmark = pytest.mark.integration


@dataclass
class Msg:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]


class Flaky:
    def __init__(self) -> None:
        self.fail = True

    def send(self, msg: Msg, callback: db.DeliveryReport | None = None) -> None:
        if callback is not None:
            callback(RuntimeError("down") if self.fail else None)

    def flush(self, timeout: float | None = None) -> int:
        return 0


def test_outbox_metrics(metrics_probe: Any, db_url: str) -> None:
    name = f"itom{uuid.uuid4().hex[:8]}"
    metadata = MetaData()
    table = db.outbox_table(metadata, name)
    attrs = {"im_infra.db.outbox.table": name}
    with db.new("it-outbox-metrics", dsn=db_url) as provider:
        provider.create_all(metadata)
        try:
            outbox = db.Outbox(provider, table=table.name)
            for i in range(3):
                with provider.transaction():
                    outbox.add("t", key=f"k{i}", value=b"v")
            time.sleep(0.2)
            publisher = Flaky()
            with db.OutboxRelay(provider, publisher, message=Msg, table=name) as relay:
                assert relay.stats().backlog == 3
                assert metrics_probe.value("im_infra.db.outbox.backlog", **attrs) == 3
                assert metrics_probe.value("im_infra.db.outbox.oldest_age", **attrs) >= 0.2
                assert relay.run_once() == 0
                assert metrics_probe.value("im_infra.db.outbox.publish_failures", **attrs) == 3
                publisher.fail = False
                assert relay.run_once() == 3
                assert metrics_probe.value("im_infra.db.outbox.published", **attrs) == 3
                relay.stats()
                assert metrics_probe.value("im_infra.db.outbox.backlog", **attrs) == 0
                assert metrics_probe.value("im_infra.db.outbox.oldest_age", **attrs) == 0
        finally:
            provider.drop_all(metadata)
