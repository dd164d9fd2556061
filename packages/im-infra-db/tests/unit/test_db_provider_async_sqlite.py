"""The asyncio provider on aiosqlite: same behaviour as the blocking one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select, text

from im_infra import clog, db
from im_infra.db import AsyncDBProvider, DBConfig

from .conftest import LogLines

metadata = MetaData()
items = Table(
    "aitems",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(50), nullable=False),
)


@pytest.fixture
async def ap(sqlite_config: DBConfig) -> AsyncIterator[AsyncDBProvider]:
    async with AsyncDBProvider(sqlite_config, service="db-tests") as provider:
        await provider.create_all(metadata)
        yield provider


async def names(p: AsyncDBProvider) -> list[str]:
    async with p.session() as s:
        return list(await s.scalars(select(items.c.name).order_by(items.c.id)))


async def test_protocols(ap: AsyncDBProvider) -> None:
    assert isinstance(ap, db.AsyncProvider)
    tx = await ap.begin()
    assert isinstance(tx, db.AsyncTransaction)
    await tx.rollback()


async def _insert_then_fail(p: AsyncDBProvider, error: Exception, **values: object) -> None:
    async with p.transaction() as s:
        await s.execute(insert(items).values(**values))
        raise error


async def test_commit_rollback_and_savepoint(ap: AsyncDBProvider) -> None:
    async with ap.transaction() as s:
        await s.execute(insert(items).values(id=1, name="a"))
    with pytest.raises(ValueError, match="boom"):
        await _insert_then_fail(ap, ValueError("boom"), id=2, name="b")
    async with ap.transaction() as outer:
        await outer.execute(insert(items).values(id=3, name="outer"))
        with pytest.raises(RuntimeError):
            await _insert_then_fail(ap, RuntimeError("undo inner"), id=4, name="inner")
        async with ap.transaction() as inner:
            assert inner is outer
    assert await names(ap) == ["a", "outer"]


async def test_tasks_started_inside_a_transaction_get_their_own(ap: AsyncDBProvider) -> None:
    async with ap.transaction() as outer:

        async def child(i: int) -> bool:
            async with ap.transaction() as mine:
                await mine.execute(insert(items).values(id=100 + i, name=f"child{i}"))
                return mine is outer

        shared = await asyncio.gather(child(1), child(2))
        await outer.execute(insert(items).values(id=1, name="outer"))
    assert list(shared) == [False, False]
    assert sorted(await names(ap)) == ["child1", "child2", "outer"]


async def test_begin(ap: AsyncDBProvider) -> None:
    tx = await ap.begin()
    await tx.session.execute(insert(items).values(id=1, name="a"))
    await tx.commit()
    await tx.rollback()
    with pytest.raises(db.TransactionError):
        await tx.commit()
    async with await ap.begin() as tx2:
        await tx2.session.execute(insert(items).values(id=2, name="dropped"))
    assert await names(ap) == ["a"]


async def test_errors_translated_and_logged_with_trace_id(
    ap: AsyncDBProvider, log_lines: LogLines
) -> None:
    async with ap.transaction() as s:
        await s.execute(insert(items).values(id=1, name="a"))
    with clog.trace_context("trace-async-1"), pytest.raises(db.IntegrityError):
        await _insert_then_fail(ap, AssertionError("not reached"), id=1, name="dup")
    lines = log_lines()
    assert [line for line in lines if line["level"] in ("error", "critical")] == []
    errors = [line for line in lines if line["msg"] == "query failed"]
    assert [(e["level"], e["trace_id"]) for e in errors] == [("debug", "trace-async-1")]


async def test_slow_query_log_carries_trace_id_through_greenlets(
    sqlite_config: DBConfig, log_lines: LogLines
) -> None:
    cfg = sqlite_config.model_copy(update={"slow_threshold": 1e-9})
    async with AsyncDBProvider(cfg) as provider:
        with clog.trace_context("trace-async-slow"):
            async with provider.session() as s:
                await s.execute(text("SELECT 1"))
    slow = [line for line in log_lines() if line["msg"] == "slow query"]
    assert slow
    assert slow[-1]["trace_id"] == "trace-async-slow"
    assert slow[-1]["sql"] == "SELECT 1"


async def test_closed(ap: AsyncDBProvider) -> None:
    await ap.close()
    await ap.close()
    with pytest.raises(db.ProviderClosedError):
        await ap.ping()
    with pytest.raises(db.ProviderClosedError):
        async with ap.transaction():
            pass
