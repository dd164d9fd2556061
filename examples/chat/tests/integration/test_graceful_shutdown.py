"""SIGTERM to the demo worker mid-stream: it finishes the message in hand, commits its offsets,
deregisters and revokes its lease at once (not after the registration TTL)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from im_infra_demo.cli import put_config
from im_infra_demo.schema import Base, ChatMessage, StoredMessage, tune_sqlite
from im_infra_demo.worker import SERVICE
from sqlalchemy import func, select

from im_infra import coord, db, mq

ENV = "demo-shutdown-test"


def _worker(tmp_path: Path, topic: str, group: str, log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, IM_INFRA_ENV=ENV)
    cmd = [sys.executable, "-m", "im_infra_demo.worker", "--name", "w1"]
    with log.open("ab") as out:
        return subprocess.Popen(
            [*cmd, "--topic", topic, "--group", group],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )


def _stored(store: db.DBProvider) -> int:
    with store.session() as s:
        return int(s.scalar(select(func.count()).select_from(StoredMessage)) or 0)


def _wait(cond: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def test_sigterm_finishes_commits_deregisters_and_revokes(
    tmp_path: Path, etcd_endpoints: str, kafka_brokers: str, redis_url: str
) -> None:
    topic, group = f"gochat.shutdown.{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    db_url = f"sqlite:///{tmp_path / 'chat.db'}"
    log = tmp_path / "worker.log"
    with coord.connect(etcd_endpoints, service="test", env=ENV) as provider:
        put_config(provider, db_url, redis_url)
        with mq.new_admin_client("test", coord=provider) as admin:
            admin.create_topic(topic, partitions=2, replication_factor=1)
        store = db.new("test", dsn=db_url)
        tune_sqlite(store.engine)
        store.create_all(Base.metadata)

        worker = _worker(tmp_path, topic, group, log)
        _wait(lambda: provider.registry.discover(SERVICE), 30, "the worker to register")
        n = 3000
        with mq.new_producer("test", coord=provider) as producer:
            for i in range(n):
                chat = ChatMessage(i + 1, f"c{i % 5}", "u", f"m{i}", "run", time.time())
                producer.send(mq.Message(topic=topic, key=chat.conversation, value=chat.to_json()))
            producer.flush()
        _wait(lambda: _stored(store) >= 100, 60, "the worker to store 100 messages")

        worker.send_signal(signal.SIGTERM)
        t_term = time.monotonic()
        assert worker.wait(timeout=30) == 0, log.read_text()[-3000:]
        # deregistered at once: the registration's TTL is 10 s
        _wait(lambda: not provider.registry.discover(SERVICE), 2, "the registration to vanish")
        assert time.monotonic() - t_term < 10
        stopped_at = _stored(store)
        assert 100 <= stopped_at < n, "SIGTERM must land mid-stream"

        lines = [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{")]
        msgs = [line["msg"] for line in lines]
        handled = sum(m in ("message stored", "duplicate message skipped") for m in msgs)
        assert handled == stopped_at  # every message taken in hand was finished
        assert msgs.index("consumer closed") > max(
            i for i, m in enumerate(msgs) if m == "message stored"
        )

        # The offsets of everything handled were committed: a new worker in the same group
        # starts exactly where the first stopped (no redelivery), and finishes the rest.
        worker2 = _worker(tmp_path, topic, group, tmp_path / "worker2.log")
        try:
            _wait(lambda: _stored(store) == n, 120, "the second worker to store the rest")
        finally:
            worker2.send_signal(signal.SIGTERM)
            worker2.wait(timeout=30)
        log2 = (tmp_path / "worker2.log").read_text()
        assert "duplicate message skipped" not in log2
        store.close()
