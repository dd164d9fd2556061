"""Issue #15 item 4: a connection lost while COMMIT is in flight is CommitOutcomeUnknownError
(a ConnectionLostError), not "lost". A proxy between the provider and the real PostgreSQL /
MariaDB forwards the COMMIT, then cuts the connection before the reply passes: the server has
committed, the client cannot know, and the error says so. Blocking and asyncio, explicit
transactions and ``transaction()`` scopes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.engine import make_url

from im_infra import db
from im_infra_testsupport.faultproxy import FaultProxy

from .conftest import SERVER_BACKENDS, Schema, make_schema

pytestmark = pytest.mark.integration


def _is_commit(data: bytes) -> bool:
    return b"COMMIT" in data.upper()


@pytest.fixture(params=SERVER_BACKENDS)
def server_url(request: pytest.FixtureRequest) -> str:
    name = "pg_url" if request.param == "postgresql" else "mysql_url"
    return str(request.getfixturevalue(name))


@pytest.fixture
def proxy(server_url: str) -> Iterator[FaultProxy]:
    url = make_url(server_url)
    p = FaultProxy(f"{url.host}:{url.port or (5432 if 'postgres' in url.drivername else 3306)}")
    yield p
    p.close()


@pytest.fixture
def tables(server_url: str, unique: str) -> Iterator[Schema]:
    schema = make_schema(unique)
    with db.DBProvider(db.DBConfig(dsn=server_url)) as direct:  # type: ignore[arg-type]
        direct.create_all(schema.metadata)
        yield schema
        direct.drop_all(schema.metadata)


def _via(server_url: str, proxy: FaultProxy) -> str:
    return (
        make_url(server_url)
        .set(host="127.0.0.1", port=proxy.port)
        .render_as_string(hide_password=False)
    )


def _rows(server_url: str, schema: Schema) -> int:
    config = db.DBConfig(dsn=server_url)  # type: ignore[arg-type]
    with db.DBProvider(config) as direct, direct.session() as s:
        return int(s.execute(select(func.count()).select_from(schema.users)).scalar_one())


def _check(error: BaseException, proxy: FaultProxy, server_url: str, schema: Schema) -> None:
    assert isinstance(error, db.CommitOutcomeUnknownError)
    assert isinstance(error, db.ConnectionLostError)
    assert "may or may not have been committed" in str(error)
    assert proxy.cuts == 1
    # The server received the COMMIT before the cut: the transaction the client could not
    # confirm is there (the case the old "lost" message got wrong).
    assert _rows(server_url, schema) == 1


def test_commit_cut_explicit_transaction(
    server_url: str, proxy: FaultProxy, tables: Schema
) -> None:
    with db.new("it-db", dsn=_via(server_url, proxy)) as provider:
        tx = provider.begin()
        tx.session.execute(insert(tables.users).values(name="a", balance=1))
        proxy.cut_after(_is_commit)
        with pytest.raises(db.DBError) as info:
            tx.commit()
        _check(info.value, proxy, server_url, tables)
        with provider.session() as s:  # the pool recovers
            assert s.execute(select(func.count()).select_from(tables.users)).scalar_one() == 1


def test_commit_cut_transaction_scope(server_url: str, proxy: FaultProxy, tables: Schema) -> None:
    def insert_then_cut_at_commit(provider: db.DBProvider) -> None:
        with provider.transaction() as s:
            s.execute(insert(tables.users).values(name="b", balance=1))
            proxy.cut_after(_is_commit)

    with db.new("it-db", dsn=_via(server_url, proxy)) as provider:
        with pytest.raises(db.DBError) as info:
            insert_then_cut_at_commit(provider)
        _check(info.value, proxy, server_url, tables)


def test_commit_cut_in_a_plain_session(server_url: str, proxy: FaultProxy, tables: Schema) -> None:
    """A COMMIT the caller sends itself (``s.commit()`` in ``session()``) is recognised too: the
    engine announces it, not the provider's flow."""

    def insert_then_commit(provider: db.DBProvider) -> None:
        with provider.session() as s:
            s.execute(insert(tables.users).values(name="c", balance=1))
            proxy.cut_after(_is_commit)
            s.commit()

    with db.new("it-db", dsn=_via(server_url, proxy)) as provider:
        with pytest.raises(db.DBError) as info:
            insert_then_commit(provider)
        _check(info.value, proxy, server_url, tables)


def test_statement_cut_before_commit_is_plain_connection_lost(
    server_url: str, proxy: FaultProxy, tables: Schema
) -> None:
    """The other side of the line: a connection lost before COMMIT was sent is a lost (rolled
    back) transaction, ConnectionLostError and not the "unknown" subclass."""

    def insert_then_cut_at_select(provider: db.DBProvider) -> None:
        with provider.transaction() as s:
            s.execute(insert(tables.users).values(name="c", balance=1))
            proxy.cut_after(lambda data: b"SELECT" in data.upper())
            s.execute(select(func.count()).select_from(tables.users))

    with db.new("it-db", dsn=_via(server_url, proxy)) as provider:
        with pytest.raises(db.DBError) as info:
            insert_then_cut_at_select(provider)
        assert isinstance(info.value, db.ConnectionLostError)
        assert not isinstance(info.value, db.CommitOutcomeUnknownError)
    assert _rows(server_url, tables) == 0


async def test_commit_cut_async(server_url: str, proxy: FaultProxy, tables: Schema) -> None:
    provider = db.new_async("it-db", dsn=_via(server_url, proxy))
    try:
        tx = await provider.begin()
        await tx.session.execute(insert(tables.users).values(name="d", balance=1))
        proxy.cut_after(_is_commit)
        with pytest.raises(db.DBError) as info:
            await tx.commit()
        _check(info.value, proxy, server_url, tables)
    finally:
        await provider.close()
