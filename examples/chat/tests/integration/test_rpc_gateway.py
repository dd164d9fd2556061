"""GET /conversations/{id}/messages: the gateway calls two logic workers over gRPC by service
name (coord's balanced channel), and both take calls; a worker stopped meanwhile loses none."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from im_infra_demo.cli import put_config
from im_infra_demo.gateway import Gateway, serve
from im_infra_demo.schema import LOGIC_SERVICE

from im_infra import clog, coord, mq

ENV = "demo-rpc-test"


def _get(port: int, conversation: str, trace: str) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}/conversations/{conversation}/messages"
    req = urllib.request.Request(url, headers={"X-Trace-Id": trace})
    with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310
        assert resp.status == 200
        doc: dict[str, Any] = json.loads(resp.read())
    return doc


def _states(run_dir: Path) -> str:
    """What each worker's log says about its group membership (for a failure message)."""
    out = []
    for name in ("w1", "w2"):
        path = run_dir / f"{name}.log"
        text = path.read_text() if path.exists() else ""
        marks = [m for m in ("subscribed", "partitions assigned", "message stored") if m in text]
        out.append(f"{name}: {', '.join(marks) or 'nothing yet'}")
    return "; ".join(out)


def test_gateway_reads_messages_from_both_workers_over_grpc(
    tmp_path: Path, etcd_endpoints: str, kafka_brokers: str, redis_url: str
) -> None:
    topic, group = f"gochat.rpc.{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    env = dict(os.environ, IM_INFRA_ENV=ENV, IM_INFRA_ETCD_ENDPOINTS=etcd_endpoints)
    workers: dict[str, subprocess.Popen[bytes]] = {}
    with coord.connect(etcd_endpoints, service="im-gateway", env=ENV) as provider:
        put_config(provider, f"sqlite:///{tmp_path / 'chat.db'}", redis_url)
        with mq.new_admin_client("test", coord=provider) as admin:
            admin.create_topic(topic, partitions=2, replication_factor=1)
        for name in ("w1", "w2"):
            with (tmp_path / f"{name}.log").open("ab") as out:
                workers[name] = subprocess.Popen(
                    [sys.executable, "-m", "im_infra_demo.worker", "--name", name,
                     "--topic", topic, "--group", group],
                    stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                )  # fmt: skip
            if name == "w1":
                # w2 joins a group w1 is already in. Two members joining a new group at the same
                # moment were, on noida-db, sometimes never given an assignment (neither member,
                # 60 s; 3 of ~45 runs, all on a loaded machine; the consume loops were polling):
                # a broker behaviour this test is not about (docs/operations.md).
                deadline = time.monotonic() + 60
                while "partitions assigned" not in (tmp_path / "w1.log").read_text():
                    assert time.monotonic() < deadline, f"w1 assigned; {_states(tmp_path)}"
                    time.sleep(0.1)
        # only this test's workers: other tests' im-logic workers may be registered too
        gateway = Gateway(provider, "rpc-test", topic, logic_group=group)
        server = serve(gateway, "127.0.0.1", 0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        port = server.server_address[1]
        try:
            deadline = time.monotonic() + 60
            while {i.id for i in gateway.logic.ready_instances()} != {"w1", "w2"}:
                assert time.monotonic() < deadline, "both workers registered and READY"
                time.sleep(0.1)
            conversation = f"c-{uuid.uuid4().hex[:6]}"
            with clog.trace_context("rpc-demo-trace"):
                for i in range(6):
                    gateway.accept(conversation, "u1", f"hello {i}")
            gateway.producer.flush()
            while len(_get(port, conversation, "poll")["messages"]) < 6:
                assert time.monotonic() < deadline, f"the 6 messages stored; {_states(tmp_path)}"
                time.sleep(0.2)
            served = Counter(_get(port, conversation, f"t{i}")["served_by"] for i in range(20))
            assert served == {"w1": 10, "w2": 10}  # round robin over the two workers
            doc = _get(port, conversation, "get-trace")
            assert doc["trace_id"] == "get-trace"
            assert [m["text"] for m in doc["messages"]] == [f"hello {i}" for i in range(5, -1, -1)]
            assert {m["trace_id"] for m in doc["messages"]} == {"rpc-demo-trace"}
            # w1 stops (SIGTERM: deregister, drain) while reads go on: none fails
            errors: list[BaseException] = []
            stop = threading.Event()

            def reader() -> None:
                while not stop.is_set():
                    try:
                        _get(port, conversation, "during-stop")
                    except Exception as exc:
                        errors.append(exc)

            readers = [threading.Thread(target=reader) for _ in range(3)]
            for t in readers:
                t.start()
            workers["w1"].send_signal(signal.SIGTERM)
            assert workers["w1"].wait(30) == 0
            time.sleep(0.5)
            stop.set()
            for t in readers:
                t.join(30)
            assert errors == []
            mine = [
                i
                for i in provider.registry.discover(LOGIC_SERVICE)
                if i.metadata == {"group": group}
            ]
            assert [i.id for i in mine] == ["w2"]
            assert {_get(port, conversation, "after")["served_by"] for _ in range(4)} == {"w2"}
        finally:
            server.shutdown()
            server.server_close()
            gateway.close()
            for proc in workers.values():
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(30)
