"""Redis goes away under a running demo worker: every message is still stored, once.

Found by the soak run (docs/soak.md): across a Redis restart the worker's idempotency step
(``cache.once``) raised ``CacheUnavailable`` and the consumer, which had no retry policy, logged
the message and went on without it. Redis is no store of record: while it is away the message
id's primary key is the guard, and the recent-messages cache is simply not updated.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from im_infra_demo.cli import put_config
from im_infra_demo.schema import Base, ChatMessage, StoredMessage, tune_sqlite
from im_infra_demo.worker import SERVICE
from sqlalchemy import func, select

from im_infra import coord, db, mq

if TYPE_CHECKING:
    from im_infra_testsupport.fixtures import RedisServer

ENV = "demo-redis-outage-test"


def _stored(store: db.DBProvider) -> int:
    with store.session() as s:
        return int(s.scalar(select(func.count()).select_from(StoredMessage)) or 0)


def _wait(cond: Callable[[], bool], timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    tail = log.read_text()[-3000:]
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{tail}")


def test_worker_stores_every_message_once_while_redis_is_down_and_after(
    tmp_path: Path,
    etcd_endpoints: str,
    kafka_brokers: str,
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    redis = redis_server_factory()
    topic, group = f"gochat.redis-outage.{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    db_url = f"sqlite:///{tmp_path / 'chat.db'}"
    log = tmp_path / "worker.log"
    with coord.connect(etcd_endpoints, service="test", env=ENV) as provider:
        put_config(provider, db_url, redis.url)
        with mq.new_admin_client("test", coord=provider) as admin:
            admin.create_topic(topic, partitions=2, replication_factor=1)
        store = db.new("test", dsn=db_url)
        tune_sqlite(store.engine)
        store.create_all(Base.metadata)
        # the variable wins over redis.yaml: point both at the test's own Redis
        env = dict(os.environ, IM_INFRA_ENV=ENV, IM_INFRA_REDIS_URL=redis.url)
        cmd = [sys.executable, "-m", "im_infra_demo.worker", "--name", "w1"]
        with log.open("ab") as out:
            worker = subprocess.Popen(
                [*cmd, "--topic", topic, "--group", group], stdout=out, stderr=out, env=env
            )
        try:
            _wait(lambda: bool(provider.registry.discover(SERVICE)), 30, "registration", log)
            sent = 0

            def send(n: int) -> None:
                nonlocal sent
                with mq.new_producer("test", coord=provider) as producer:
                    for i in range(sent, sent + n):
                        chat = ChatMessage(i + 1, f"c{i % 5}", "u", f"m{i}", "run", time.time())
                        msg = mq.Message(topic=topic, key=chat.conversation, value=chat.to_json())
                        producer.send(msg)
                    producer.flush()
                sent += n

            send(100)
            _wait(lambda: _stored(store) == 100, 60, "100 stored with Redis up", log)
            redis.kill()
            send(100)
            _wait(lambda: _stored(store) == 200, 60, "100 more stored with Redis down", log)
            redis.start()  # empty: it keeps nothing on disk
            send(100)
            _wait(lambda: _stored(store) == 300, 60, "100 more stored with Redis back", log)
            assert worker.poll() is None
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=30)
        store.close()
    msgs = [json.loads(x)["msg"] for x in log.read_text().splitlines() if x.startswith("{")]
    assert "idempotency keys unavailable; storing by primary key" in msgs
    assert "consume callback failed" not in msgs  # nothing reached the consumer's skip path
    assert msgs.count("message stored") == 300  # each once (the primary key allows no more)
