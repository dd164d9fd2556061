"""The asyncio provider, on SQLAlchemy's asyncio extension (aiomysql, psycopg async, aiosqlite).

Same shape as :class:`~im_infra.db.DBProvider`, with ``await`` / ``async with``; the config,
URL/driver resolution, error translation, logging and nesting rules are the same code: the
session and transaction flows of ``_internal/tx.py``, run here with asyncio I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any

from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from im_infra.clog.lifecycle import AsyncClosing
from im_infra.coord.deprecation import deprecated_names, warn_renamed
from im_infra.db._internal.core import ProviderBase
from im_infra.db._internal.flow import AsyncExits, arun
from im_infra.db._internal.replicas import RoutingSession, check_forever
from im_infra.db._internal.tx import SessionScopeFlows, TransactionFlows, TransactionScopeFlows
from im_infra.db.config import DBConfig

__all__ = ["AsyncDBProvider", "AsyncDBTransaction"]


class AsyncDBTransaction(TransactionFlows[AsyncSession], AsyncExits):
    """An explicit transaction from :meth:`AsyncDBProvider.begin`; see DBTransaction."""

    __slots__ = ()

    @property
    def session(self) -> AsyncSession:
        """The AsyncSession to run statements in."""
        return self._session

    async def commit(self) -> None:
        """Commit; on failure the transaction is rolled back and a DBError raised."""
        await arun(self._commit())

    async def rollback(self) -> None:
        """Roll back (no-op when already committed or rolled back)."""
        await arun(self._rollback())

    async def __aenter__(self) -> AsyncDBTransaction:
        return self


class _AsyncSessionScope(SessionScopeFlows[AsyncSession], AsyncExits):
    """``async with provider.session() as s``: see ``SessionScopeFlows``."""

    __slots__ = ()

    async def __aenter__(self) -> AsyncSession:
        return self._open()


class _AsyncTransactionScope(TransactionScopeFlows[AsyncSession], AsyncExits):
    """``async with provider.transaction() as s``: see ``TransactionScopeFlows`` (owner: the
    task)."""

    __slots__ = ()

    async def __aenter__(self) -> AsyncSession:
        return await arun(self._enter(asyncio.current_task()))


class AsyncDBProvider(ProviderBase[AsyncEngine, AsyncSession], AsyncClosing):
    """Asyncio database access for one service; the twin of :class:`~im_infra.db.DBProvider`.

    Task-safe: every session()/transaction() gets its own AsyncSession; a transaction() nested
    in the same task becomes a SAVEPOINT, one in another task is independent.
    """

    def __init__(self, config: DBConfig, *, service: str = "") -> None:
        super().__init__(config, service=service, is_async=True, factory=create_async_engine)
        self._sessions = async_sessionmaker(self._engine, expire_on_commit=config.expire_on_commit)
        self._read_sessions = self._sessions
        self._checker: asyncio.Task[None] | None = None
        if self._router is not None:
            self._read_sessions = async_sessionmaker(
                self._engine,
                sync_session_class=RoutingSession,
                router=self._router,
                expire_on_commit=config.expire_on_commit,
            )

    def session(self) -> _AsyncSessionScope:
        """``async with provider.session() as s:`` an AsyncSession you commit yourself.
        With replicas configured its plain reads go to a replica (see docs/db.md)."""
        if self._router is not None and self._checker is None:
            self._checker = asyncio.get_running_loop().create_task(
                check_forever(self._router, self._replica_engines),
                name="im-infra-db-replica-check",
            )
        return _AsyncSessionScope(self)

    def transaction(self) -> _AsyncTransactionScope:
        """``async with provider.transaction() as s:`` commit on success, rollback on any
        exception; nested in the same task it becomes a SAVEPOINT."""
        return _AsyncTransactionScope(self)

    async def begin(self) -> AsyncDBTransaction:
        """Start an explicit transaction on a new AsyncSession."""
        return AsyncDBTransaction(await arun(self._begin()), self._core)

    def begin_tx(self) -> Coroutine[Any, Any, AsyncDBTransaction]:
        """Deprecated alias of :meth:`begin` (the Go name; removed in 0.2.0)."""
        warn_renamed("AsyncProvider.begin_tx", "begin", "0.2.0")
        return self.begin()

    async def ping(self) -> None:
        """Round-trip ``SELECT 1``; raises the DBError that says what is wrong."""
        with self._core.translating(check_open=True):
            async with self._engine.connect() as conn:
                await conn.exec_driver_sql("SELECT 1")

    async def create_all(self, metadata: MetaData) -> None:
        """Create the tables of ``metadata`` that do not exist yet (tests and dev)."""
        with self._core.translating(check_open=True):
            async with self._engine.begin() as conn:
                await conn.run_sync(metadata.create_all)

    async def drop_all(self, metadata: MetaData) -> None:
        """Drop the tables of ``metadata`` that exist."""
        with self._core.translating(check_open=True):
            async with self._engine.begin() as conn:
                await conn.run_sync(metadata.drop_all)

    async def close(self) -> None:
        """Close every pooled connection; idempotent."""
        if not self._start_close():
            return
        if self._checker is not None:
            self._checker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._checker
        await self._engine.dispose()
        for replica in self._replica_engines:
            await replica.dispose()


# ``new_async`` moved to im_infra.db.factory (docs/naming.md)
__getattr__ = deprecated_names(__name__, {"new_async": "im_infra.db.factory.new_async"}, "0.2.0")
