"""Fixtures for db's integration tests: MariaDB, PostgreSQL (shared devstack) and SQLite.

Every test gets table names of its own (``<unique>_users`` …) and drops them at the end, since
the server databases are shared with other test runs.
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from im_infra import clog, db

pytestmark = pytest.mark.integration

BACKENDS = ("mysql", "postgresql", "sqlite")
SERVER_BACKENDS = ("mysql", "postgresql")


@dataclass
class Schema:
    """Per-test tables with unique names."""

    metadata: MetaData
    users: Table
    counters: Table


def make_schema(prefix: str) -> Schema:
    metadata = MetaData()
    users = Table(
        f"{prefix}_users",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("name", String(50), nullable=False, unique=True),
        Column("balance", Integer, nullable=False, default=0),
    )
    counters = Table(
        f"{prefix}_counters",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=False),
        Column("value", Integer, nullable=False),
    )
    return Schema(metadata, users, counters)


@pytest.fixture
def unique() -> str:
    return f"it{uuid.uuid4().hex[:10]}"


@pytest.fixture
def schema(unique: str) -> Schema:
    return make_schema(unique)


def url_for(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if backend == "mysql":
        return str(request.getfixturevalue("mysql_url"))
    if backend == "postgresql":
        return str(request.getfixturevalue("pg_url"))
    return f"sqlite:///{tmp_path / 'it.db'}"


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def db_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return url_for(backend, request, tmp_path)


@pytest.fixture
def admin_engine(db_url: str) -> Iterator[Engine]:
    """A plain SQLAlchemy engine on the same database, for KILL and inspection."""
    engine = create_engine(db_url, poolclass=NullPool)
    try:
        yield engine
    finally:
        engine.dispose()


ProviderFactory = Callable[..., db.DBProvider]


@pytest.fixture
def make_provider(db_url: str, schema: Schema) -> Iterator[ProviderFactory]:
    """``make_provider(**overrides)`` → a DBProvider from ``db.new`` with the test's tables."""
    made: list[db.DBProvider] = []

    def make(**overrides: Any) -> db.DBProvider:
        provider = db.new("it-db", dsn=db_url, **overrides)
        made.append(provider)
        provider.create_all(schema.metadata)
        return provider

    yield make
    for provider in made:
        provider.close()
    with db.DBProvider(db.DBConfig(dsn=db_url)) as cleanup:  # type: ignore[arg-type]
        cleanup.drop_all(schema.metadata)


@pytest.fixture
def provider(make_provider: ProviderFactory) -> db.DBProvider:
    return make_provider()


AsyncProviderFactory = Callable[..., Awaitable[db.AsyncDBProvider]]


@pytest.fixture
async def make_async_provider(db_url: str, schema: Schema) -> AsyncIterator[AsyncProviderFactory]:
    """``await make_async_provider(**overrides)`` → an AsyncDBProvider with the test's tables."""
    made: list[db.AsyncDBProvider] = []

    async def make(**overrides: Any) -> db.AsyncDBProvider:
        provider = db.new_async("it-db", dsn=db_url, **overrides)
        made.append(provider)
        await provider.create_all(schema.metadata)
        return provider

    yield make
    for provider in made:
        await provider.close()
    async with db.AsyncDBProvider(db.DBConfig(dsn=db_url)) as cleanup:  # type: ignore[arg-type]
        await cleanup.drop_all(schema.metadata)


@pytest.fixture
async def aprovider(make_async_provider: AsyncProviderFactory) -> db.AsyncDBProvider:
    return await make_async_provider()


LogLines = Callable[[], list[dict[str, Any]]]


@pytest.fixture
def log_lines() -> Iterator[LogLines]:
    """clog into a buffer; the fixture value returns the JSON lines written so far."""
    buffer = io.StringIO()
    clog.init(service="it-db", level="DEBUG", format="json", sink=buffer)

    def lines() -> list[dict[str, Any]]:
        return [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]

    try:
        yield lines
    finally:
        clog.init(service="it-db", level="INFO")


def connection_id(backend: str) -> str:
    """SQL returning the server-side id of the current connection."""
    return "SELECT pg_backend_pid()" if backend == "postgresql" else "SELECT CONNECTION_ID()"


def kill_connection(admin: Engine, backend: str, conn_id: int) -> None:
    """Terminate connection ``conn_id`` from another session (KILL / pg_terminate_backend)."""
    with admin.connect() as conn:
        if backend == "postgresql":
            conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": conn_id})
        else:
            conn.exec_driver_sql(f"KILL {int(conn_id)}")
        conn.commit()


def wait_connection_gone(admin: Engine, backend: str, conn_id: int, timeout: float = 10.0) -> None:
    """Wait until the server no longer lists connection ``conn_id``."""
    import time

    query = (
        "SELECT count(*) FROM pg_stat_activity WHERE pid = :id"
        if backend == "postgresql"
        else "SELECT count(*) FROM information_schema.PROCESSLIST WHERE ID = :id"
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with admin.connect() as conn:
            if conn.execute(text(query), {"id": conn_id}).scalar_one() == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"connection {conn_id} still listed after {timeout}s")
