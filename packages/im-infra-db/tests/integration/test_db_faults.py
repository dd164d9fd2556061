"""A connection killed server-side (KILL / pg_terminate_backend): the next use recovers."""

from __future__ import annotations

import pytest
from sqlalchemy import insert, select, text
from sqlalchemy.engine import Engine

from im_infra import db

from .conftest import (
    SERVER_BACKENDS,
    AsyncProviderFactory,
    LogLines,
    ProviderFactory,
    Schema,
    connection_id,
    kill_connection,
    wait_connection_gone,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.parametrize("backend", SERVER_BACKENDS, indirect=True),
]


def _conn_id(provider: db.DBProvider, backend: str) -> int:
    with provider.session() as s:
        return int(s.execute(text(connection_id(backend))).scalar_one())


def _kill(admin: Engine, backend: str, conn_id: int) -> None:
    kill_connection(admin, backend, conn_id)
    wait_connection_gone(admin, backend, conn_id)


def test_pre_ping_replaces_a_killed_idle_connection(
    make_provider: ProviderFactory, admin_engine: Engine, backend: str, log_lines: LogLines
) -> None:
    provider = make_provider(pool_size=1, max_overflow=0, pool_pre_ping=True)
    first = _conn_id(provider, backend)
    assert _conn_id(provider, backend) == first  # the pool reuses its one connection
    _kill(admin_engine, backend, first)
    second = _conn_id(provider, backend)  # no error: the pre-ping noticed and reconnected
    assert second != first
    replaced = [line for line in log_lines() if line["msg"] == "stale pooled connection replaced"]
    assert [line["level"] for line in replaced] == ["info"]
    assert not [line for line in log_lines() if line["level"] == "error"]


def test_without_pre_ping_one_call_fails_then_the_pool_recovers(
    make_provider: ProviderFactory, admin_engine: Engine, backend: str
) -> None:
    provider = make_provider(pool_size=1, max_overflow=0, pool_pre_ping=False)
    first = _conn_id(provider, backend)
    _kill(admin_engine, backend, first)
    with pytest.raises(db.ConnectionLostError, match=r"connection lost"):
        _conn_id(provider, backend)
    assert _conn_id(provider, backend) != first


def test_connection_killed_inside_a_transaction(
    make_provider: ProviderFactory, admin_engine: Engine, backend: str, schema: Schema
) -> None:
    provider = make_provider(pool_size=1, max_overflow=0)

    def doomed() -> None:
        with provider.transaction() as s:
            s.execute(insert(schema.users).values(name="lost"))
            conn_id = int(s.execute(text(connection_id(backend))).scalar_one())
            _kill(admin_engine, backend, conn_id)
            s.execute(insert(schema.users).values(name="lost-too"))

    with pytest.raises(db.ConnectionLostError):
        doomed()
    with provider.transaction() as s:
        s.execute(insert(schema.users).values(name="after"))
    with provider.session() as s:
        assert list(s.scalars(select(schema.users.c.name))) == ["after"]


async def test_async_recovers_after_kill(
    make_async_provider: AsyncProviderFactory, admin_engine: Engine, backend: str
) -> None:
    for pre_ping in (True, False):
        provider = await make_async_provider(pool_size=1, max_overflow=0, pool_pre_ping=pre_ping)

        async def conn_id(p: db.AsyncDBProvider = provider) -> int:
            async with p.session() as s:
                return int((await s.execute(text(connection_id(backend)))).scalar_one())

        first = await conn_id()
        _kill(admin_engine, backend, first)
        if not pre_ping:
            with pytest.raises(db.ConnectionLostError):
                await conn_id()
        assert await conn_id() != first
