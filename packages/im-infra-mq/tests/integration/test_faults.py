"""Fault injection: a consumer SIGKILLed mid-stream, a broker that goes away."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from im_infra import mq

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WORKER = Path(__file__).with_name("consumer_worker.py")


def _start_worker(brokers: str, topic: str, group: str, out: Path, delay: float, **env: str) -> Any:
    return subprocess.Popen(
        [sys.executable, str(WORKER), brokers, topic, group, str(out), str(delay), "0"],
        stdin=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
    )


def _stop(worker: Any) -> None:
    """SIGTERM a worker still running (SIGKILL when it does not stop)."""
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(20)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(5)


def _lines(out: Path) -> list[bytes]:
    return out.read_bytes().splitlines() if out.exists() else []


@pytest.mark.broker_deviation("dead-member-never-evicted")
@pytest.mark.parametrize("identity", ["from-coord", "explicit"])
def test_sigkilled_consumer_restarts_without_losing_messages(
    kafka_brokers: str,
    etcd_endpoints: str,
    make_topic: Any,
    h: Any,
    tmp_path: Path,
    identity: str,
) -> None:
    """SIGKILL a consumer mid-stream, restart it: every message is handled, duplicates counted.

    noida-db 0.2.3 never evicts a member that died without leaving (its session timeout is not
    enforced while the group rebalances), so a fresh member joining afterwards waits forever.
    Apache Kafka evicts it after session.timeout.ms. Static membership (group.instance.id,
    KIP-345), which both brokers honour, lets the restarted process replace the dead member at
    once. The workers set no librdkafka option: the factory derives the id from a sticky
    instance ID in coord (the restarted process gets its predecessor's), or takes
    ``consumer.groupInstanceId``.
    """
    topic = make_topic("kill", 3)
    group = h.unique("g")
    env = {"IM_INFRA_ETCD_ENDPOINTS": etcd_endpoints}
    if identity == "explicit":
        env["MQ_IT_GROUP_INSTANCE_ID"] = "worker-1"
    total = 3000
    values = [f"m{i:05d}".encode() for i in range(total)]
    h.produce(kafka_brokers, topic, values)
    out = tmp_path / "handled.txt"

    worker = _start_worker(kafka_brokers, topic, group, out, delay=0.001, **env)
    try:
        # Kill it mid-stream: some messages handled (and some commits done), most not.
        h.wait_for(lambda: len(_lines(out)) >= 600, 60, "the first worker to handle 600")
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        handled_before = len(_lines(out))
        assert handled_before < total, "the worker finished before it could be killed"

        worker = _start_worker(kafka_brokers, topic, group, out, delay=0, **env)
        h.wait_for(lambda: set(_lines(out)) >= set(values), 90, "every message after restart")
    finally:
        _stop(worker)
    counts = Counter(_lines(out))
    assert set(counts) == set(values)  # nothing lost
    duplicates = sum(c - 1 for c in counts.values())
    print(f"kill test: {handled_before} handled before SIGKILL, {duplicates} duplicates")
    # Redelivery is bounded by what was handled since the last commit (200 ms interval).
    assert duplicates <= handled_before


def test_broker_unreachable_reports_errors_within_message_timeout(
    kafka_server_factory: Any,
) -> None:
    server = kafka_server_factory()
    timeout_ms = 3000
    producer = mq.new_producer(
        "mq-it",
        common={"brokers": [server.brokers]},
        rdkafka_config={"message.timeout.ms": timeout_ms},
    )
    admin = mq.new_admin_client("mq-it", common={"brokers": [server.brokers]})
    admin.create_topic("unreach", 1, 1)
    producer.send_sync(mq.Message("unreach", value=b"while up"), timeout=30)
    server.kill()

    errors: list[mq.MQError | None] = []
    all_done = threading.Event()
    lock = threading.Lock()

    def record(err: mq.MQError | None) -> None:
        with lock:
            errors.append(err)
            if len(errors) == 20:
                all_done.set()

    started = time.monotonic()
    for i in range(20):
        producer.send(mq.Message("unreach", key=f"k{i}", value=b"x"), record)
    # Generous bound: librdkafka fails a message once message.timeout.ms has passed.
    assert all_done.wait(timeout_ms / 1000 + 15), f"only {len(errors)} callbacks ran"
    elapsed = time.monotonic() - started
    assert all(isinstance(e, mq.DeliveryError) for e in errors)
    assert {e.code for e in errors if isinstance(e, mq.DeliveryError)} == {"_MSG_TIMED_OUT"}
    with pytest.raises(mq.DeliveryError):
        producer.send_sync(mq.Message("unreach", value=b"y"))
    closing = time.monotonic()
    producer.close(timeout=1.0)
    admin.close()
    print(f"callbacks failed after {elapsed:.1f}s; close took {time.monotonic() - closing:.1f}s")


def test_close_with_dead_broker_reports_pending_messages(kafka_server_factory: Any) -> None:
    server = kafka_server_factory()
    producer = mq.new_producer("mq-it", common={"brokers": [server.brokers]})
    admin = mq.new_admin_client("mq-it", common={"brokers": [server.brokers]})
    admin.create_topic("pending", 1, 1)
    admin.close()
    producer.send_sync(mq.Message("pending", value=b"up"), timeout=30)
    server.kill()
    errors: list[mq.MQError | None] = []
    for _ in range(10):
        producer.send(mq.Message("pending", value=b"x"), errors.append)
    producer.close(timeout=0.5)  # message.timeout.ms is 300 s: only close can fail them
    assert len(errors) == 10
    assert all(isinstance(e, mq.DeliveryError) and e.retriable for e in errors)


@pytest.mark.broker_deviation("dead-member-never-evicted")
def test_concurrent_consumer_sigkilled_twice_loses_nothing_and_keeps_key_order(
    kafka_brokers: str, etcd_endpoints: str, make_topic: Any, h: Any, tmp_path: Path
) -> None:
    """``concurrency=16``, SIGKILLed twice mid-stream: nothing lost, and among first deliveries
    each key's messages arrive in order (a key's later message never ran before an earlier one
    had; offsets were never stored past an unfinished message)."""
    topic = make_topic("killc", 6)
    group = h.unique("g")
    keys, per_key = 40, 75
    values = [f"{k:02d}-{s:04d}".encode() for s in range(per_key) for k in range(keys)]
    with mq.new_producer("mq-it", common={"brokers": [kafka_brokers]}) as producer:
        for value in values:
            producer.send(mq.Message(topic, key=value[:2], value=value))
        assert producer.flush(30) == 0
    out = tmp_path / "handled.txt"
    env = {"IM_INFRA_ETCD_ENDPOINTS": etcd_endpoints, "MQ_IT_CONCURRENCY": "16"}
    worker = _start_worker(kafka_brokers, topic, group, out, delay=0.002, **env)
    try:
        for kill_at in (600, 1800):
            h.wait_for(lambda n=kill_at: len(_lines(out)) >= n, 90, f"{kill_at} handled")
            worker.send_signal(signal.SIGKILL)
            worker.wait(10)
            assert len(set(_lines(out))) < len(values), "finished before the kill"
            worker = _start_worker(kafka_brokers, topic, group, out, delay=0.002, **env)
        h.wait_for(lambda: set(_lines(out)) >= set(values), 120, "every message")
    finally:
        _stop(worker)
    lines = _lines(out)
    assert set(lines) == set(values)  # nothing lost
    first: dict[bytes, list[int]] = {}
    seen: set[bytes] = set()
    for line in lines:
        if line not in seen:
            seen.add(line)
            first.setdefault(line[:2], []).append(int(line[3:]))
    for key, seqs in first.items():
        assert seqs == sorted(seqs), f"key {key!r}: first deliveries out of order"
    print(f"concurrent kill test: {len(lines) - len(values)} duplicates")


@pytest.mark.broker_deviation("dead-member-never-evicted")
@pytest.mark.parametrize("flavour", ["blocking", "asyncio"])
def test_batch_consumer_sigkilled_mid_list_loses_nothing(
    kafka_brokers: str,
    etcd_endpoints: str,
    make_topic: Any,
    h: Any,
    tmp_path: Path,
    flavour: str,
) -> None:
    """A batch handler SIGKILLed in the middle of a list (part of it handled, part not), twice:
    nothing is lost, because a list's offsets are stored only after the handler returned."""
    topic = make_topic("killb", 3)
    group = h.unique("g")
    total = 2000
    values = [f"b{i:05d}".encode() for i in range(total)]
    h.produce(kafka_brokers, topic, values)
    out = tmp_path / "handled.txt"
    env = {"IM_INFRA_ETCD_ENDPOINTS": etcd_endpoints, "MQ_IT_BATCH": "50"}
    if flavour == "asyncio":
        env["MQ_IT_ASYNC"] = "1"
    worker = _start_worker(kafka_brokers, topic, group, out, delay=0.001, **env)
    try:
        for kill_at in (400, 1100):
            h.wait_for(lambda n=kill_at: len(_lines(out)) >= n, 90, f"{kill_at} handled")
            worker.send_signal(signal.SIGKILL)
            worker.wait(10)
            assert len(set(_lines(out))) < total, "finished before the kill"
            worker = _start_worker(kafka_brokers, topic, group, out, delay=0.001, **env)
        h.wait_for(lambda: set(_lines(out)) >= set(values), 120, "every message")
    finally:
        _stop(worker)
    counts = Counter(_lines(out))
    assert set(counts) == set(values)  # nothing lost
    print(f"batch kill test ({flavour}): {sum(counts.values()) - total} duplicates")
