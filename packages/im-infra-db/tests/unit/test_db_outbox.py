"""The transactional outbox on SQLite (blocking and asyncio): writing in the caller's
transaction, the relay's ordering, marking, failure handling, stats and purging. The fault
tests against PostgreSQL, MariaDB and SQLite with a SIGKILLed relay are in
packages/im-infra-db/tests/integration/test_outbox_faults.py."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, func, insert, select

from im_infra import clog, db
from im_infra.db._internal.outbox_core import OutboxEvent, sent_prefix


@dataclass
class Msg:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]


@dataclass
class Recorder:
    """A publisher that delivers at once, failing the messages whose value is in ``fail``."""

    sent: list[Msg] = field(default_factory=list)
    fail: set[bytes] = field(default_factory=set)

    def send(self, msg: Msg, callback: db.DeliveryReport | None = None) -> None:
        self.sent.append(msg)
        if callback is not None:
            callback(RuntimeError("broker said no") if msg.value in self.fail else None)

    def flush(self, timeout: float | None = None) -> int:
        return 0


@dataclass
class AsyncRecorder:
    inner: Recorder = field(default_factory=Recorder)

    async def send(self, msg: Msg, callback: db.DeliveryReport | None = None) -> None:
        loop = asyncio.get_running_loop()
        # report later, on the loop, as mq's asyncio producer does
        loop.call_soon(self.inner.send, msg, callback)

    async def flush(self, timeout: float | None = None) -> int:
        await asyncio.sleep(0)
        return 0


metadata = MetaData()
notes = Table(
    "notes", metadata, Column("id", Integer, primary_key=True), Column("body", String(20))
)


@pytest.fixture
def provider(tmp_path: Path) -> db.DBProvider:
    provider = db.new("outbox-unit", driver="sqlite", database=str(tmp_path / "o.db"))
    provider.create_all(metadata)
    outbox_md = MetaData()
    db.outbox_table(outbox_md)
    provider.create_all(outbox_md)
    return provider


def relay_for(provider: db.DBProvider, recorder: Recorder, **kw: object) -> db.OutboxRelay[Msg]:
    return db.OutboxRelay(provider, recorder, message=Msg, retention=None, **kw)  # type: ignore[arg-type]


def unsent(provider: db.DBProvider) -> int:
    table = db.outbox_table(MetaData())
    with provider.session() as s:
        return int(s.scalar(select(func.count()).where(table.c.sent_at.is_(None))) or 0)


def test_add_commits_and_rolls_back_with_the_transaction(provider: db.DBProvider) -> None:
    outbox = db.Outbox(provider)
    with provider.transaction() as s:
        s.execute(insert(notes).values(body="kept"))
        outbox.add("chat.stored", key="c1", value=b"kept")

    def failing_business() -> None:
        with provider.transaction() as s:
            s.execute(insert(notes).values(body="lost"))
            outbox.add("chat.stored", key="c1", value=b"lost")
            raise RuntimeError("business failure")

    with pytest.raises(RuntimeError):
        failing_business()
    recorder = Recorder()
    with relay_for(provider, recorder) as relay:
        assert relay.run_once() == 1
    assert [m.value for m in recorder.sent] == [b"kept"]


def test_add_outside_a_transaction_is_refused(provider: db.DBProvider) -> None:
    outbox = db.Outbox(provider)
    with pytest.raises(db.OutboxError, match=r"inside provider\.transaction"):
        outbox.add("t", value=b"x")
    tx = provider.begin()  # the explicit form passes its session
    outbox.add("t", value=b"x", session=tx.session)
    tx.commit()
    assert unsent(provider) == 1


@pytest.mark.parametrize(
    ("topic", "key", "value"),
    [("", None, b"v"), ("t" * 250, None, b"v"), ("t", "k" * 256, b"v"), ("t", b"\xff", b"v")],
)
def test_bad_events_are_outbox_errors(
    provider: db.DBProvider, topic: str, key: str | bytes | None, value: bytes
) -> None:
    outbox = db.Outbox(provider)
    with pytest.raises(db.OutboxError), provider.transaction():
        outbox.add(topic, key=key, value=value)


def test_relay_publishes_per_key_in_order_with_trace_id_and_headers(
    provider: db.DBProvider,
) -> None:
    outbox = db.Outbox(provider)
    with clog.trace_context("trace-42"):
        for i in range(30):
            with provider.transaction():
                outbox.add("t", key=f"k{i % 3}", value=str(i), headers={"h": "v"})
    with provider.transaction():
        outbox.add("t", value=b"no-key", headers={"trace_id": b"own"})
    recorder = Recorder()
    with relay_for(provider, recorder, batch_size=2) as relay:
        total = 0
        while n := relay.run_once():
            total += n
    assert total == 31 and unsent(provider) == 0
    for k in range(3):
        values = [int(m.value or b"") for m in recorder.sent if m.key == f"k{k}".encode()]
        assert values == list(range(k, 30, 3))
    keyed = [m for m in recorder.sent if m.key is not None]
    assert all(m.headers == {"h": b"v", "trace_id": b"trace-42"} for m in keyed)
    (plain,) = [m for m in recorder.sent if m.key is None]
    assert plain.headers == {"trace_id": b"own"}


def test_a_failed_event_holds_back_its_key_only(provider: db.DBProvider) -> None:
    outbox = db.Outbox(provider)
    for key, value in [("a", b"a1"), ("a", b"a2"), ("b", b"b1"), ("a", b"a3")]:
        with provider.transaction():
            outbox.add("t", key=key, value=value)
    recorder = Recorder(fail={b"a1"})
    with relay_for(provider, recorder) as relay:
        assert relay.run_once() == 1  # b1 only; a2 and a3 were delivered but stay unsent
        assert unsent(provider) == 3
        recorder.fail.clear()
        assert relay.run_once() == 3
    values = [m.value for m in recorder.sent if m.key == b"a"]
    assert values == [b"a1", b"a2", b"a3", b"a1", b"a2", b"a3"]  # the retry keeps the order


def test_a_publisher_that_raises_stops_the_key_in_this_round(provider: db.DBProvider) -> None:
    outbox = db.Outbox(provider)
    with provider.transaction():
        outbox.add("t", key="a", value=b"a1")
        outbox.add("t", key="a", value=b"a2")
        outbox.add("t", key="b", value=b"b1")

    class Refusing(Recorder):
        def send(self, msg: Msg, callback: db.DeliveryReport | None = None) -> None:
            if msg.value == b"a1":
                raise RuntimeError("queue full")
            super().send(msg, callback)

    recorder = Refusing()
    with relay_for(provider, recorder) as relay:
        assert relay.run_once() == 1
    assert [m.value for m in recorder.sent] == [b"b1"]  # a2 not handed over after a1 failed


def test_sent_prefix() -> None:
    def ev(i: int, key: bytes | None) -> OutboxEvent:
        return OutboxEvent(i, "t", key, None, {}, 0.0)

    events = [ev(1, b"a"), ev(2, None), ev(3, b"a"), ev(4, b"b"), ev(5, None), ev(6, b"b")]
    boom = RuntimeError()
    assert sent_prefix(events, [None] * 6) == [1, 2, 3, 4, 5, 6]
    assert sent_prefix(events, [boom, boom, None, None, None, boom]) == [4, 5]


def test_stats_and_purge(provider: db.DBProvider) -> None:
    outbox = db.Outbox(provider)
    with provider.transaction():
        for i in range(5):
            outbox.add("t", key="k", value=str(i))
    with relay_for(provider, Recorder()) as relay:
        stats = relay.stats()
        assert stats.backlog == 5 and stats.oldest_age >= 0
        assert relay.last_stats == stats
        relay.run_once()
        assert relay.stats() == db.OutboxStats(0, 0.0)
        assert relay.purge(3600) == 0  # sent just now: kept
        assert relay.purge(0) == 5


def test_relay_settings_are_validated(provider: db.DBProvider) -> None:
    for bad in ({"batch_size": 0}, {"poll_interval": 0}, {"table": "x; drop"}):
        with pytest.raises(db.OutboxError):
            relay_for(provider, Recorder(), **bad)


def test_run_stops_on_close(provider: db.DBProvider) -> None:
    import threading

    outbox = db.Outbox(provider)
    with provider.transaction():
        outbox.add("t", key="k", value=b"1")
    recorder = Recorder()
    relay = relay_for(provider, recorder, poll_interval=0.01)
    worker = threading.Thread(target=relay.run)
    worker.start()
    try:
        for _ in range(500):
            if recorder.sent:
                break
            threading.Event().wait(0.01)
    finally:
        relay.close()
        worker.join(5)
    assert not worker.is_alive()
    assert [m.value for m in recorder.sent] == [b"1"]


async def test_async_outbox_and_relay(tmp_path: Path) -> None:
    provider = db.new_async("outbox-unit", driver="sqlite", database=str(tmp_path / "a.db"))
    try:
        outbox = db.AsyncOutbox(provider)
        await provider.create_all(outbox.table.metadata)
        with pytest.raises(db.OutboxError):
            await outbox.add("t", value=b"x")
        for i in range(10):
            async with provider.transaction():
                await outbox.add("t", key=f"k{i % 2}", value=str(i))

        async def failing_business() -> None:
            async with provider.transaction():
                await outbox.add("t", key="k0", value=b"rolled back")
                raise RuntimeError

        with pytest.raises(RuntimeError):
            await failing_business()
        publisher = AsyncRecorder()
        relay = db.AsyncOutboxRelay(provider, publisher, message=Msg, batch_size=1)
        async with relay:
            total = 0
            while n := await relay.run_once():
                total += n
            assert total == 10
            assert (await relay.stats()).backlog == 0
        sent = publisher.inner.sent
        assert [m.value for m in sent if m.key == b"k0"] == [b"0", b"2", b"4", b"6", b"8"]
        assert [m.value for m in sent if m.key == b"k1"] == [b"1", b"3", b"5", b"7", b"9"]
    finally:
        await provider.close()


def test_a_failing_flush_or_factory_fails_the_round_not_the_relay(
    provider: db.DBProvider,
) -> None:
    outbox = db.Outbox(provider)
    with provider.transaction():
        outbox.add("t", key="a", value=b"1")
        outbox.add("t", key="b", value=b"2")

    class NoReports(Recorder):
        def send(self, msg: Msg, callback: db.DeliveryReport | None = None) -> None:
            self.sent.append(msg)  # never reports

        def flush(self, timeout: float | None = None) -> int:
            raise RuntimeError("flush broke")

    publisher = NoReports()
    relay = db.OutboxRelay(provider, publisher, message=Msg, publish_timeout=0.2, retention=None)
    with relay:
        assert relay.run_once() == 0  # nothing reported: nothing marked, retried later
    assert unsent(provider) == 2

    def broken_factory(
        topic: str, key: bytes | None, value: bytes | None, headers: dict[str, bytes]
    ) -> Msg:
        if key == b"a":
            raise ValueError("cannot build")
        return Msg(topic, key, value, headers)

    recorder = Recorder()
    with db.OutboxRelay(provider, recorder, message=broken_factory, retention=None) as relay:
        assert relay.run_once() == 1  # b published, a retried
    assert [m.value for m in recorder.sent] == [b"2"]
