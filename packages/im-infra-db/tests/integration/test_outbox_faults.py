"""The outbox end to end against real servers, with the relay SIGKILLed twice.

PostgreSQL publishes into a real Kafka topic (the shared broker) through im_infra.mq's producer;
MariaDB and SQLite through a recording publisher in the relay process. On the servers two
relays run at once (row locks keep them off each other's events); SQLite, without row locks,
has one (as documented). 5,000 transactions (every tenth rolled back) write a row and an event
while the relays run. Checks: every committed event published at least once, none of a
rolled-back transaction, per key the first publications in commit order, and duplicates only
from the kills: every event is published at most once by relays that were never killed, and a
killed relay re-published at most one round.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, func, insert, select

from im_infra import clog, db

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WORKER = Path(__file__).with_name("outbox_relay_worker.py")
TRANSACTIONS = 5000
THREADS = 4
KEYS_PER_THREAD = 10
KILL_AT = (TRANSACTIONS // 3, 2 * TRANSACTIONS // 3)
# A killed relay can have published, without marking, at most one round: the events of
# batch_size (50) keys, read 4 * 50 at a time.
MAX_DUPLICATES_PER_KILL = 200


class Relays:
    """Relay processes; ``kill(i)`` SIGKILLs relay i and starts a new one in its place."""

    def __init__(self, args: list[str], count: int) -> None:
        self.args = args
        self.procs = [self._start() for _ in range(count)]
        self.killed: set[int] = set()

    def _start(self, *, wait: bool = True) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, str(WORKER), *self.args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        if wait:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line.strip() == "ready", proc.stderr.read() if proc.stderr else line
        return proc

    def kill(self, index: int) -> None:
        proc = self.procs[index]
        assert proc.poll() is None, (
            f"relay {index} died: {proc.stderr.read() if proc.stderr else ''}"
        )
        proc.kill()
        proc.wait(10)
        self.killed.add(proc.pid)
        # The replacement starts in the background: the writers go on meanwhile, so the second
        # kill still comes while transactions are being written.
        self.procs[index] = self._start(wait=False)

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def write_transactions(
    provider: db.DBProvider,
    outbox: db.Outbox,
    messages: Table,
    topic: str,
    relays: Relays,
    kills: list[int],
) -> dict[str, list[int]]:
    """THREADS writers; returns the committed values per key (in commit order)."""
    committed: dict[str, list[int]] = defaultdict(list)
    done = 0
    lock = threading.Lock()
    errors: list[BaseException] = []

    def writer(t: int) -> None:
        nonlocal done
        try:
            for j in range(TRANSACTIONS // THREADS):
                i = t * (TRANSACTIONS // THREADS) + j
                key = f"t{t}-k{j % KEYS_PER_THREAD}"
                try:
                    with clog.trace_context(f"tr-{i}"), provider.transaction() as s:
                        s.execute(insert(messages).values(id=i, body=f"m{i}"))
                        outbox.add(topic, key=key, value=str(i))
                        if i % 10 == 7:
                            raise LookupError("rolled back on purpose")
                except LookupError:
                    pass
                else:
                    committed[key].append(i)  # one writer per key: commit order
                with lock:
                    done += 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(THREADS)]
    for thread in threads:
        thread.start()
    pending = list(KILL_AT)
    while any(thread.is_alive() for thread in threads):
        if pending and done >= pending[0]:
            pending.pop(0)
            victim = len(kills) % len(relays.procs)
            relays.kill(victim)
            kills.append(victim)
        time.sleep(0.01)
    assert not errors, errors
    assert len(kills) == 2
    return committed


def wait_drained(provider: db.DBProvider, table: Table, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with provider.session() as s:
            left = s.scalar(select(func.count()).where(table.c.sent_at.is_(None)))
        if left == 0:
            return
        time.sleep(0.2)
    raise AssertionError(f"{left} outbox events still unsent after {timeout}s")


def check(
    published: list[tuple[int, str, int]], committed: dict[str, list[int]], killed: set[int]
) -> None:
    """``published``: (relay pid, key, value) in publication order (per key)."""
    all_committed = {i for values in committed.values() for i in values}
    seen = [i for _pid, _key, i in published]
    assert len(all_committed) == TRANSACTIONS - TRANSACTIONS // 10
    assert set(seen) == all_committed, (
        f"missing {len(all_committed - set(seen))}, rolled back but published "
        f"{len(set(seen) - all_committed)}"
    )
    by_survivors: dict[int, int] = defaultdict(int)
    for pid, _key, i in published:
        if pid not in killed:
            by_survivors[i] += 1
    twice = [i for i, n in by_survivors.items() if n > 1]
    assert not twice, f"{len(twice)} events published twice by relays that were never killed"
    duplicates = len(seen) - len(set(seen))
    assert duplicates <= len(killed) * MAX_DUPLICATES_PER_KILL, duplicates
    by_key: dict[str, list[int]] = defaultdict(list)
    for _pid, key, i in published:
        by_key[key].append(i)
    for key, values in committed.items():
        first: list[int] = []
        for i in by_key[key]:
            if i not in first:
                first.append(i)
        assert first == values, f"key {key}: published out of commit order"


@pytest.fixture
def setup(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[str, db.DBProvider, Table, Table]]:
    backend = request.param
    if backend == "postgresql":
        url = str(request.getfixturevalue("pg_url"))
    elif backend == "mysql":
        url = str(request.getfixturevalue("mysql_url"))
    else:
        url = f"sqlite:///{tmp_path / 'outbox.db'}"
    prefix = f"itob{uuid.uuid4().hex[:8]}"
    metadata = MetaData()
    messages = Table(
        f"{prefix}_msgs",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("body", String(20)),
    )
    table = db.outbox_table(metadata, f"{prefix}_outbox")
    # connect_timeout is SQLite's busy timeout: 4 writers and 2 relays take turns on one file
    provider = db.new("it-outbox", dsn=url, pool_size=THREADS + 2, connect_timeout=60)
    provider.create_all(metadata)
    try:
        yield url, provider, messages, table
    finally:
        provider.drop_all(metadata)
        provider.close()


@pytest.mark.parametrize("setup", ["mysql", "sqlite"], indirect=True)
def test_outbox_with_killed_relay_recording_publisher(
    setup: tuple[str, db.DBProvider, Table, Table], tmp_path: Path
) -> None:
    url, provider, messages, table = setup
    out = tmp_path / "published.txt"
    count = 1 if url.startswith("sqlite") else 2  # SQLite: one relay (no row locks)
    relays = Relays([url, table.name, "file", str(out)], count)
    kills: list[int] = []
    try:
        outbox = db.Outbox(provider, table=table.name)
        committed = write_transactions(provider, outbox, messages, "chat", relays, kills)
        wait_drained(provider, table)
    finally:
        relays.stop()
    published = []
    for line in out.read_text().splitlines():
        pid, key, value = line.split(" ")
        published.append((int(pid), key, int(value)))
    check(published, committed, relays.killed)


@pytest.mark.parametrize("setup", ["postgresql"], indirect=True)
def test_outbox_with_killed_relays_into_kafka(
    setup: tuple[str, db.DBProvider, Table, Table], kafka_brokers: str
) -> None:
    from confluent_kafka import Consumer
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.cimpl import NewTopic

    url, provider, messages, table = setup
    topic = f"it-outbox-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": kafka_brokers})
    admin.create_topics([NewTopic(topic, 4, 1)])[topic].result(30)
    relays = Relays([url, table.name, "kafka", kafka_brokers], 2)
    kills: list[int] = []
    try:
        outbox = db.Outbox(provider, table=table.name)
        committed = write_transactions(provider, outbox, messages, topic, relays, kills)
        wait_drained(provider, table)
    finally:
        relays.stop()
    expected = {i for values in committed.values() for i in values}
    consumer = Consumer(
        {
            "bootstrap.servers": kafka_brokers,
            "group.id": f"it-outbox-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
        }
    )
    published: list[tuple[int, str, int]] = []
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not expected <= {i for _p, _k, i in published}:
            for msg in consumer.consume(1000, 1.0):
                key, value = msg.key(), msg.value()
                if msg.error() is None and isinstance(key, bytes) and isinstance(value, bytes):
                    raw = msg.headers() or []
                    pairs = raw.items() if isinstance(raw, dict) else raw
                    headers = {name: v for name, v in pairs if isinstance(v, bytes)}
                    pid = int(headers["relay"])
                    assert headers["trace_id"] == b"tr-" + value  # captured by add()
                    published.append((pid, key.decode(), int(value)))
    finally:
        consumer.close()
        admin.delete_topics([topic])
    check(published, committed, relays.killed)
