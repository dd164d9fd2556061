"""The asyncio provider, on SQLAlchemy's asyncio extension (aiomysql, psycopg async, aiosqlite).

Same shape as :class:`~im_infra.db.DBProvider`, with ``await`` / ``async with``; the config,
URL/driver resolution, error translation, logging and nesting rules are the same code.
"""

from __future__ import annotations

import asyncio
import contextlib
from contextvars import Token
from types import TracebackType
from typing import TYPE_CHECKING, Any

from sqlalchemy import MetaData
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    AsyncSessionTransaction,
    async_sessionmaker,
    create_async_engine,
)

from im_infra.clog.lifecycle import AsyncClosing
from im_infra.db._internal.core import (
    ProviderBase,
    ProviderCore,
    TxState,
    live_config,
)
from im_infra.db._internal.replicas import RoutingSession, check_forever
from im_infra.db.config import DBConfig
from im_infra.db.errors import DBError

if TYPE_CHECKING:
    from im_infra.coord import Provider as CoordProvider

__all__ = ["AsyncDBProvider", "AsyncDBTransaction", "new_async"]


def new_async(
    service_name: str | None = None, *, coord: CoordProvider | None = None, **overrides: Any
) -> AsyncDBProvider:
    """The asyncio twin of :func:`im_infra.db.new` (same configuration; async drivers chosen
    for the backend). No connection is made here; ``await provider.ping()`` to fail fast."""
    live = live_config(service_name, coord, overrides)
    try:
        provider = AsyncDBProvider(live.value, service=live.service)
    except BaseException:
        live.close()
        raise
    provider._follow(live)
    return provider


class AsyncDBTransaction(TxState):
    """An explicit transaction from :meth:`AsyncDBProvider.begin_tx`; see DBTransaction."""

    __slots__ = ("_core", "_session")

    def __init__(self, session: AsyncSession, core: ProviderCore[AsyncSession]) -> None:
        super().__init__()
        self._session = session
        self._core = core

    @property
    def session(self) -> AsyncSession:
        """The AsyncSession to run statements in."""
        return self._session

    async def commit(self) -> None:
        """Commit; on failure the transaction is rolled back and a DBError raised."""
        self._start_commit(self._core.target.server)
        try:
            with self._core.translating():
                await self._session.commit()
        finally:
            await self._session.close()

    async def rollback(self) -> None:
        """Roll back (no-op when already committed or rolled back)."""
        if not self._start_rollback():
            return
        try:
            with self._core.translating():
                await self._session.rollback()
        finally:
            await self._session.close()

    async def __aenter__(self) -> AsyncDBTransaction:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            await self.rollback()
            return
        with contextlib.suppress(DBError):  # the body's error is the one to report
            await self.rollback()
        if isinstance(exc, SQLAlchemyError):
            self._core.raise_translated(exc)


class _AsyncSessionScope:
    """``async with provider.session() as s``: see the blocking ``_SessionScope``."""

    __slots__ = ("_provider", "_session")

    def __init__(self, provider: AsyncDBProvider) -> None:
        self._provider = provider

    async def __aenter__(self) -> AsyncSession:
        self._provider._core.check_open()
        self._session = self._provider._read_sessions()
        return self._session

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        core = self._provider._core
        try:
            await self._session.close()
        except SQLAlchemyError as close_exc:
            if exc is None:
                core.raise_translated(close_exc)
        if isinstance(exc, SQLAlchemyError):
            core.raise_translated(exc)


class _AsyncTransactionScope:
    """``async with provider.transaction() as s``: commit or rollback; nested in the same task,
    a SAVEPOINT (see the blocking ``_TransactionScope``)."""

    __slots__ = ("_provider", "_session", "_token", "_tx")

    def __init__(self, provider: AsyncDBProvider) -> None:
        self._provider = provider

    async def __aenter__(self) -> AsyncSession:
        core = self._provider._core
        owner = asyncio.current_task()
        joined = core.joinable(owner)
        self._token: Token[Any] | None = None
        if joined is None:
            self._provider._mark_write()
            session = self._session = self._provider._sessions()
            self._tx: AsyncSessionTransaction = await session.begin().__aenter__()
            self._token = core.active.set((session, owner))
            return session
        self._session = joined
        with core.translating():
            self._tx = await joined.begin_nested().__aenter__()
        return joined

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        core = self._provider._core
        try:
            await self._tx.__aexit__(exc_type, exc, tb)
        except SQLAlchemyError as end_exc:
            if exc is None:  # the commit failed (and was rolled back)
                core.raise_translated(end_exc)
        finally:
            if self._token is not None:
                core.active.reset(self._token)
                await self._session.close()
        if isinstance(exc, SQLAlchemyError):
            core.raise_translated(exc)


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

    async def begin_tx(self) -> AsyncDBTransaction:
        """Start an explicit transaction on a new AsyncSession."""
        self._core.check_open()
        self._mark_write()
        session = self._sessions()
        try:
            await session.begin()
        except SQLAlchemyError as exc:
            await session.close()
            self._core.raise_translated(exc)
        return AsyncDBTransaction(session, self._core)

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
        if self._core.closed:
            return
        self._core.closed = True
        self._untrack_pools()
        if self._checker is not None:
            self._checker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._checker
        await self._engine.dispose()
        for replica in self._replica_engines:
            await replica.dispose()
