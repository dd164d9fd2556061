"""Concurrent transactions on one row: SELECT … FOR UPDATE prevents lost updates."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import insert, select, update

from im_infra import db

from .conftest import SERVER_BACKENDS, Schema

pytestmark = [
    pytest.mark.integration,
    pytest.mark.parametrize("backend", SERVER_BACKENDS, indirect=True),
]

WORKERS = 4
INCREMENTS = 15


def _seed(provider: db.DBProvider, schema: Schema) -> None:
    with provider.transaction() as s:
        s.execute(insert(schema.counters).values(id=1, value=0))


def _value(provider: db.DBProvider, schema: Schema) -> int:
    with provider.session() as s:
        return int(s.execute(select(schema.counters.c.value)).scalar_one())


def test_for_update_prevents_lost_updates(provider: db.DBProvider, schema: Schema) -> None:
    counters = schema.counters
    _seed(provider, schema)

    def worker() -> None:
        for _ in range(INCREMENTS):
            with provider.transaction() as s:
                current = s.execute(
                    select(counters.c.value).where(counters.c.id == 1).with_for_update()
                ).scalar_one()
                s.execute(update(counters).where(counters.c.id == 1).values(value=current + 1))

    with ThreadPoolExecutor(WORKERS) as pool:
        for future in [pool.submit(worker) for _ in range(WORKERS)]:
            future.result(timeout=60)
    assert _value(provider, schema) == WORKERS * INCREMENTS


def test_without_for_update_the_same_pattern_loses_updates(
    provider: db.DBProvider, schema: Schema
) -> None:
    """The control: both transactions read before either writes, so one increment is lost."""
    counters = schema.counters
    _seed(provider, schema)
    both_read = threading.Barrier(2, timeout=20)

    def worker() -> None:
        with provider.transaction() as s:
            current = s.execute(select(counters.c.value).where(counters.c.id == 1)).scalar_one()
            both_read.wait()
            s.execute(update(counters).where(counters.c.id == 1).values(value=current + 1))

    with ThreadPoolExecutor(2) as pool:
        for future in [pool.submit(worker) for _ in range(2)]:
            future.result(timeout=60)
    assert _value(provider, schema) == 1


async def test_async_for_update_prevents_lost_updates(
    aprovider: db.AsyncDBProvider, schema: Schema
) -> None:
    counters = schema.counters
    async with aprovider.transaction() as s:
        await s.execute(insert(counters).values(id=1, value=0))

    async def worker() -> None:
        for _ in range(INCREMENTS):
            async with aprovider.transaction() as s:
                result = await s.execute(
                    select(counters.c.value).where(counters.c.id == 1).with_for_update()
                )
                current = result.scalar_one()
                await asyncio.sleep(0)  # let the other tasks run while the row is locked
                await s.execute(
                    update(counters).where(counters.c.id == 1).values(value=current + 1)
                )

    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(WORKERS))), timeout=60)
    async with aprovider.session() as s:
        assert (await s.execute(select(counters.c.value))).scalar_one() == WORKERS * INCREMENTS
