"""Read replicas against a real PostgreSQL streaming replica
(tests/support/im_infra_testsupport/pg_cluster.py):
reads land on the replica, writes and locking reads on the primary, read-your-writes holds per
request context, a lagging replica is skipped, and with the replica stopped reads still
succeed through the primary. Blocking and asyncio."""

from __future__ import annotations

import asyncio
import contextvars
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, insert, select, text
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from im_infra import db
from im_infra_testsupport.pg_cluster import Cluster, pg_bin

pytestmark = [pytest.mark.integration, pytest.mark.slow]

IN_RECOVERY = text("SELECT pg_is_in_recovery()")  # true on the replica only


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    bin_dir = pg_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_basebackup) are not installed")
    made = Cluster(bin_dir)
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def table(cluster: Cluster) -> Iterator[Table]:
    table = Table(
        f"rep_{uuid.uuid4().hex[:8]}",
        MetaData(),
        Column("id", Integer, primary_key=True),
        Column("body", String(20)),
    )
    engine = create_engine(cluster.primary.url, poolclass=NullPool)
    table.metadata.create_all(engine)
    wait_replicated(cluster, f"SELECT count(*) FROM {table.name}")  # noqa: S608 - our name
    try:
        yield table
    finally:
        table.metadata.drop_all(engine)
        engine.dispose()


def wait_replicated(cluster: Cluster, sql: str, timeout: float = 20.0) -> None:
    engine = create_engine(cluster.replica.url, poolclass=NullPool)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                with engine.connect() as conn:
                    conn.exec_driver_sql(sql)
                    return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
    finally:
        engine.dispose()


def replicas(cluster: Cluster, **extra: object) -> dict[str, object]:
    return {
        "endpoints": [{"port": cluster.replica.port}],
        "maxLag": "1s",
        "readYourWrites": "0.5s",
        "checkInterval": "0.1s",
        **extra,
    }


def on_replica(session: Session) -> bool:
    return bool(session.execute(IN_RECOVERY).scalar_one())


def eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def test_reads_on_replica_writes_on_primary(cluster: Cluster, table: Table) -> None:
    with db.new("it-replica", dsn=cluster.primary.url, replicas=replicas(cluster)) as provider:
        with provider.session() as s:
            assert on_replica(s)  # a plain read
            assert s.execute(select(table.c.id)).all() == []
        with provider.session() as s:  # a write in session(): primary, and the session stays
            s.execute(insert(table).values(id=1, body="one"))
            s.commit()
            assert not on_replica(s)
        with provider.session() as s:  # a locking read: primary
            s.execute(select(table.c.id).with_for_update()).all()
            assert not on_replica(s)
        with provider.transaction() as s:  # everything in a transaction: primary
            assert not on_replica(s)
        primary = create_engine(cluster.primary.url, poolclass=NullPool)
        with primary.connect() as conn:  # the write went to the primary
            assert conn.execute(select(table.c.body)).scalar_one() == "one"
        primary.dispose()


def test_read_your_writes_per_request_context(cluster: Cluster, table: Table) -> None:
    with db.new("it-replica", dsn=cluster.primary.url, replicas=replicas(cluster)) as provider:

        def request(i: int) -> tuple[bool, str | None]:
            with provider.transaction() as s:
                s.execute(insert(table).values(id=i, body=f"b{i}"))
            with provider.session() as s:  # right after the write: the primary sees it
                return on_replica(s), s.execute(
                    select(table.c.body).where(table.c.id == i)
                ).scalar_one_or_none()

        for i in range(10, 20):
            assert contextvars.copy_context().run(request, i) == (False, f"b{i}")

        def other_request() -> bool:
            with provider.session() as s:
                return on_replica(s)

        # another request context (no write of its own) keeps reading from the replica
        assert contextvars.copy_context().run(other_request)

        def after_window() -> bool:
            request(30)
            time.sleep(0.7)  # readYourWrites 0.5s
            return other_request()

        assert contextvars.copy_context().run(after_window)


def test_lagging_replica_is_skipped(cluster: Cluster, table: Table) -> None:
    admin = create_engine(cluster.replica.url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    primary = create_engine(cluster.primary.url, poolclass=NullPool)
    with db.new("it-replica", dsn=cluster.primary.url, replicas=replicas(cluster)) as provider:

        def reads_on_replica() -> bool:
            with provider.session() as s:
                return on_replica(s)

        eventually(reads_on_replica)
        with admin.connect() as conn:
            conn.exec_driver_sql("SELECT pg_wal_replay_pause()")
        try:
            for i in range(40, 60):  # the replica receives but does not apply: lag grows
                with primary.begin() as conn:
                    conn.execute(insert(table).values(id=i, body="lag"))
                time.sleep(0.1)
            eventually(lambda: not reads_on_replica())  # maxLag 1s exceeded: primary
        finally:
            with admin.connect() as conn:
                conn.exec_driver_sql("SELECT pg_wal_replay_resume()")
        eventually(reads_on_replica)  # caught up: back on the replica
    admin.dispose()
    primary.dispose()


def test_replica_stopped_reads_go_to_primary(cluster: Cluster, table: Table) -> None:
    # checks every 2 s: right after the stop, mostly the failed connect tells
    slow_checks = replicas(cluster, checkInterval="2s")
    with db.new("it-replica", dsn=cluster.primary.url, replicas=slow_checks) as provider:
        with provider.session() as s:
            assert on_replica(s)
        cluster.replica.stop()
        try:  # at once, before any health check: the failed connect is re-routed
            for _ in range(20):
                with provider.session() as s:
                    assert not on_replica(s)
                    assert s.execute(select(table.c.id)).all() is not None
        finally:
            cluster.replica.start()
        wait_replicated(cluster, "SELECT 1")

        def back() -> bool:
            with provider.session() as s:
                return on_replica(s)

        eventually(back)  # the next check finds it streaming again


async def test_async_routing(cluster: Cluster, table: Table) -> None:
    provider = db.new_async("it-replica", dsn=cluster.primary.url, replicas=replicas(cluster))
    try:
        async with provider.session() as s:
            assert (await s.execute(IN_RECOVERY)).scalar_one() is True
        async with provider.transaction() as s:
            await s.execute(insert(table).values(id=99, body="async"))
            assert (await s.execute(IN_RECOVERY)).scalar_one() is False
        async with provider.session() as s:  # read-your-writes in this task
            assert (await s.execute(IN_RECOVERY)).scalar_one() is False
            body = await s.execute(select(table.c.body).where(table.c.id == 99))
            assert body.scalar_one() == "async"

        async def in_recovery() -> bool:
            async with provider.session() as s:
                return bool((await s.execute(IN_RECOVERY)).scalar_one())

        # another request: a task with a fresh context (one copied from this task inherits
        # its read-your-writes window)
        assert await asyncio.create_task(in_recovery(), context=contextvars.Context())
        cluster.replica.stop()
        try:  # re-routed to the primary
            assert not await asyncio.create_task(in_recovery(), context=contextvars.Context())
        finally:
            cluster.replica.start()
    finally:
        await provider.close()
