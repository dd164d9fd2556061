"""Done-when of issue 14: the seeds' examples run with only service names against documents put
with etcdctl, and pick up a change made with etcdctl while running."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from im_infra import coord

SCRIPT = Path(__file__).with_name("seed_examples.py")


def etcdctl(endpoints: str, *args: str, stdin: str | None = None) -> None:
    env = {**os.environ, "ETCDCTL_API": "3"}
    subprocess.run(
        ["etcdctl", f"--endpoints={endpoints}", *args],
        input=stdin,
        text=True,
        check=True,
        capture_output=True,
        env=env,
        timeout=10,
    )


@pytest.mark.skipif(shutil.which("etcdctl") is None, reason="etcdctl (etcd-client) not installed")
def test_seed_examples_need_only_service_names(
    etcd_endpoints: str, kafka_brokers: str, redis_url: str, pg_url: str, unique: str
) -> None:
    from sqlalchemy.engine import make_url

    pg = make_url(pg_url)
    redis_hostport = redis_url.split("://", 1)[1].split("/", 1)[0]
    root = f"/im-infra/config/{unique}"
    endpoints = etcd_endpoints.split(",")[0]
    etcdctl(
        endpoints,
        "put",
        f"{root}/global/kafka.yaml",
        stdin=(
            f"common:\n  brokers: [{kafka_brokers.split(',')[0]}]\n  clientIDPrefix: {unique}\n"
            "consumer:\n  autoOffsetReset: earliest\n"
        ),
    )
    etcdctl(
        endpoints,
        "put",
        f"{root}/global/redis.yaml",
        stdin=f"address: {redis_hostport}\ndb: 2\nkeyPrefix: '{unique}:{{service}}:'\n",
    )
    etcdctl(
        endpoints,
        "put",
        f"{root}/global/db.yaml",
        stdin=(
            f"driver: postgresql\nhost: {pg.host}\nport: {pg.port or 5432}\n"
            f"user: {pg.username}\ndatabase: {pg.database}\n"
        ),
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("IM_INFRA_") or k == "IM_INFRA_ETCD_ENDPOINTS"
    }
    env.update({"IM_INFRA_ETCD_ENDPOINTS": etcd_endpoints, "IM_INFRA_ENV": unique})
    topic = f"{unique}.messages.upstream"
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), topic, f"im-logic-group-{uuid.uuid4().hex[:8]}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.strip())
            if line.strip() == "ready":
                break
        assert lines[-1:] == ["ready"], (lines, proc.stderr.read() if proc.stderr else "")
        assert f"kafka clientIDPrefix {unique}" in lines
        assert "received hello" in lines
        assert f"cache prefix {unique}:im-logic: value v" in lines
        assert f"db postgresql {pg.database}" in lines
        assert "uid True" in lines
        # change the documents with etcdctl while it runs: both are applied live, within 1 s
        changed_at = time.monotonic()
        etcdctl(endpoints, "put", f"{root}/im-logic/redis.yaml", stdin="retry:\n  maxRetries: 7\n")
        etcdctl(endpoints, "put", f"{root}/im-logic/db.yaml", stdin="slowThreshold: 50ms\n")
        seen = {}
        for line in proc.stdout:
            seen[line.strip()] = time.monotonic() - changed_at
        assert proc.wait(30) == 0, proc.stderr.read() if proc.stderr else ""
        assert set(seen) == {"cache retries 7", "db slow threshold 0.05"}
        assert max(seen.values()) < 1.5  # both etcdctl runs included (~0.1 s each)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        with coord.connect(etcd_endpoints, env=unique) as p:
            p.client.delete(p.config.root, prefix=True)
