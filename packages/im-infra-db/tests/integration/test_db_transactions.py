"""CRUD, commit, rollback on exception, savepoints and begin on MariaDB, PostgreSQL, SQLite."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import delete, event, func, insert, select, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session, SessionTransaction

from im_infra import clog, db

from .conftest import LogLines, Schema

pytestmark = pytest.mark.integration


def _names(provider: db.DBProvider, schema: Schema) -> list[str]:
    with provider.session() as s:
        return list(s.scalars(select(schema.users.c.name).order_by(schema.users.c.id)))


async def _anames(provider: db.AsyncDBProvider, schema: Schema) -> list[str]:
    async with provider.session() as s:
        return list(await s.scalars(select(schema.users.c.name).order_by(schema.users.c.id)))


def test_crud(provider: db.DBProvider, schema: Schema) -> None:
    users = schema.users
    provider.ping()
    with provider.transaction() as s:
        s.execute(insert(users), [{"name": "alice", "balance": 10}, {"name": "bob", "balance": 5}])
    with provider.transaction() as s:
        s.execute(update(users).where(users.c.name == "bob").values(balance=users.c.balance + 1))
        s.execute(delete(users).where(users.c.name == "alice"))
    with provider.session() as s:
        rows = s.execute(select(users.c.name, users.c.balance)).all()
        by_pk = s.execute(select(users.c.name).where(users.c.id == 2)).scalar_one()
    assert [tuple(r) for r in rows] == [("bob", 6)]
    assert by_pk == "bob"


def _fail_inside(provider: db.DBProvider, schema: Schema, error: Exception) -> None:
    with provider.transaction() as s:
        s.execute(insert(schema.users).values(name="ghost"))
        raise error


def test_commit_and_rollback_on_exception(provider: db.DBProvider, schema: Schema) -> None:
    with provider.transaction() as s:
        s.execute(insert(schema.users).values(name="kept"))
    with pytest.raises(ZeroDivisionError):
        _fail_inside(provider, schema, ZeroDivisionError())
    assert _names(provider, schema) == ["kept"]


def test_savepoints(provider: db.DBProvider, schema: Schema) -> None:
    with provider.transaction() as outer:
        outer.execute(insert(schema.users).values(name="outer"))
        with pytest.raises(RuntimeError):
            _fail_inside(provider, schema, RuntimeError("inner only"))
        with provider.transaction() as inner:
            inner.execute(insert(schema.users).values(name="inner-kept"))
        # a failed statement inside a savepoint leaves the outer transaction usable
        with pytest.raises(db.IntegrityError), provider.transaction() as inner:
            inner.execute(insert(schema.users).values(name="outer"))
        outer.execute(insert(schema.users).values(name="after"))
    assert _names(provider, schema) == ["outer", "inner-kept", "after"]


def test_integrity_error_rolls_back_the_whole_transaction(
    provider: db.DBProvider, schema: Schema
) -> None:
    with provider.transaction() as s:
        s.execute(insert(schema.users).values(name="a"))

    def duplicate() -> None:
        with provider.transaction() as s:
            s.execute(insert(schema.users).values(name="b"))
            s.execute(insert(schema.users).values(name="a"))

    with pytest.raises(db.IntegrityError):
        duplicate()
    assert _names(provider, schema) == ["a"]


def test_begin(provider: db.DBProvider, schema: Schema) -> None:
    tx = provider.begin()
    tx.session.execute(insert(schema.users).values(name="committed"))
    tx.commit()
    tx.rollback()
    other = provider.begin()
    other.session.execute(insert(schema.users).values(name="rolled-back"))
    other.rollback()
    assert _names(provider, schema) == ["committed"]


class _RefuseBegin:
    """An ``after_transaction_create`` listener that fails the next begin() (as an application's
    session event can), remembering the sessions it refused."""

    def __init__(self) -> None:
        self.sessions: list[Session] = []

    def __call__(self, session: Session, transaction: SessionTransaction) -> None:
        if transaction.parent is None:
            self.sessions.append(session)
            raise sa_exc.InvalidRequestError("begin refused by a listener")

    def __enter__(self) -> _RefuseBegin:
        event.listen(Session, "after_transaction_create", self)
        return self

    def __exit__(self, *exc: object) -> None:
        event.remove(Session, "after_transaction_create", self)


def test_failed_begin_is_translated_and_closes_the_session(
    provider: db.DBProvider, schema: Schema
) -> None:
    with _RefuseBegin() as refuse, pytest.raises(db.DBError, match="begin refused"):
        provider.begin()
    assert [s.in_transaction() for s in refuse.sessions] == [False]  # closed
    test_begin(provider, schema)  # the provider is fine afterwards


async def test_async_failed_begin_is_translated_and_closes_the_session(
    aprovider: db.AsyncDBProvider, schema: Schema
) -> None:
    with _RefuseBegin() as refuse, pytest.raises(db.DBError, match="begin refused"):
        await aprovider.begin()
    assert [s.in_transaction() for s in refuse.sessions] == [False]  # closed
    tx = await aprovider.begin()
    await tx.session.execute(insert(schema.users).values(name="after"))
    await tx.commit()
    assert await _anames(aprovider, schema) == ["after"]


def test_orm_objects_usable_after_commit(provider: db.DBProvider, schema: Schema) -> None:
    from sqlalchemy.orm import registry

    mapper: Any = registry()

    class User:
        id: int
        name: str
        balance: int

    mapper.map_imperatively(User, schema.users)
    try:
        with provider.transaction() as s:
            user = User()
            user.name = "orm"
            user.balance = 3
            s.add(user)
        assert user.id >= 1  # expire_on_commit is off: attributes stay loaded
        with provider.session() as s:
            loaded = s.get(User, user.id)
            assert loaded is not None
            assert loaded.balance == 3
    finally:
        mapper.dispose()


# ---------------------------------------------------------------------------------- asyncio
async def test_async_crud(aprovider: db.AsyncDBProvider, schema: Schema) -> None:
    users = schema.users
    await aprovider.ping()
    async with aprovider.transaction() as s:
        await s.execute(
            insert(users), [{"name": "alice", "balance": 1}, {"name": "bob", "balance": 2}]
        )
    async with aprovider.transaction() as s:
        await s.execute(update(users).where(users.c.name == "alice").values(balance=7))
        await s.execute(delete(users).where(users.c.name == "bob"))
    async with aprovider.session() as s:
        total = (await s.execute(select(func.sum(users.c.balance)))).scalar_one()
    assert total == 7
    assert await _anames(aprovider, schema) == ["alice"]


async def _afail_inside(provider: db.AsyncDBProvider, schema: Schema, error: Exception) -> None:
    async with provider.transaction() as s:
        await s.execute(insert(schema.users).values(name="ghost"))
        raise error


async def test_async_commit_rollback_savepoint(
    aprovider: db.AsyncDBProvider, schema: Schema
) -> None:
    async with aprovider.transaction() as s:
        await s.execute(insert(schema.users).values(name="kept"))
    with pytest.raises(ValueError, match="boom"):
        await _afail_inside(aprovider, schema, ValueError("boom"))
    async with aprovider.transaction() as outer:
        await outer.execute(insert(schema.users).values(name="outer"))
        with pytest.raises(LookupError):
            await _afail_inside(aprovider, schema, LookupError())
    tx = await aprovider.begin()
    await tx.session.execute(insert(schema.users).values(name="tx"))
    await tx.commit()
    assert await _anames(aprovider, schema) == ["kept", "outer", "tx"]


def test_integrity_error_raised_to_the_caller_is_not_an_error_line(
    provider: db.DBProvider, schema: Schema, log_lines: LogLines
) -> None:
    """The caller receives the IntegrityError: db writes a debug line for it, no error line."""
    with provider.transaction() as s:
        s.execute(insert(schema.users).values(name="a"))
    with (
        clog.trace_context("trace-dup"),
        pytest.raises(db.IntegrityError),
        provider.transaction() as s,
    ):
        s.execute(insert(schema.users).values(name="a"))
    lines = log_lines()
    assert [line for line in lines if line["level"] in ("error", "critical")] == []
    failed = [line for line in lines if line["msg"] == "query failed"]
    assert [(x["level"], x["trace_id"], x["error_type"]) for x in failed] == [
        ("debug", "trace-dup", "IntegrityError")
    ]
