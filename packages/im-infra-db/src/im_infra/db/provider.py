"""The blocking provider: an Engine, Sessions and transactions for one database."""

from __future__ import annotations

import contextlib
import threading
from contextvars import Token
from types import TracebackType
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, MetaData, create_engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, SessionTransaction, sessionmaker

from im_infra.clog.lifecycle import Closing
from im_infra.db._internal.core import (
    ProviderBase,
    ProviderCore,
    TxState,
    live_config,
)
from im_infra.db._internal.replicas import CheckerThread, RoutingSession
from im_infra.db.config import DBConfig
from im_infra.db.errors import DBError

if TYPE_CHECKING:
    from im_infra.coord import Provider as CoordProvider

__all__ = ["DBProvider", "DBTransaction", "new"]


def new(
    service_name: str | None = None, *, coord: CoordProvider | None = None, **overrides: Any
) -> DBProvider:
    """A provider for ``service_name``'s database, configured from ``db.yaml`` through coord.

    ``coord`` is an :class:`im_infra.coord.Provider` (None: the process's default provider when
    ``$IM_INFRA_ETCD_ENDPOINTS`` is set, else ``$IM_INFRA_CONFIG_DIR`` or defaults; sources and
    precedence in docs/configuration.md); ``overrides`` are DBConfig fields (snake_case or
    camelCase) and win over everything. ``slow_threshold`` is applied live; other changes are
    logged as needing a restart.
    No connection is made here; call :meth:`DBProvider.ping` to fail fast at startup.
    """
    live = live_config(service_name, coord, overrides)
    try:
        provider = DBProvider(live.value, service=live.service)
    except BaseException:
        live.close()
        raise
    provider._follow(live)
    return provider


class DBTransaction(TxState):
    """An explicit transaction from :meth:`DBProvider.begin_tx` (the seed's ``Transaction``).

    ``commit()`` twice raises TransactionError; ``rollback()`` after it finished is a no-op, so
    ``try: ... tx.commit() finally: tx.rollback()`` is safe. As a context manager it rolls back
    unless committed. Either way the session is closed when the transaction finishes.
    """

    __slots__ = ("_core", "_session")

    def __init__(self, session: Session, core: ProviderCore[Session]) -> None:
        super().__init__()
        self._session = session
        self._core = core
        session.begin()

    @property
    def session(self) -> Session:
        """The Session to run statements in (the seed's ``Transaction.DB()``)."""
        return self._session

    def commit(self) -> None:
        """Commit; on failure the transaction is rolled back and a DBError raised."""
        self._start_commit(self._core.target.server)
        try:
            with self._core.translating():
                self._session.commit()
        finally:
            self._session.close()

    def rollback(self) -> None:
        """Roll back (no-op when already committed or rolled back)."""
        if not self._start_rollback():
            return
        try:
            with self._core.translating():
                self._session.rollback()
        finally:
            self._session.close()

    def __enter__(self) -> DBTransaction:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.rollback()
            return
        with contextlib.suppress(DBError):  # the body's error is the one to report
            self.rollback()
        if isinstance(exc, SQLAlchemyError):
            self._core.raise_translated(exc)


class _SessionScope:
    """``with provider.session() as s``: a plain Session, closed (uncommitted work rolled back)
    at the end; SQLAlchemy errors leaving the block become DBErrors."""

    __slots__ = ("_provider", "_session")

    def __init__(self, provider: DBProvider) -> None:
        self._provider = provider

    def __enter__(self) -> Session:
        self._provider._core.check_open()
        self._session = self._provider._read_sessions()
        return self._session

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        core = self._provider._core
        try:
            self._session.close()
        except SQLAlchemyError as close_exc:
            if exc is None:
                core.raise_translated(close_exc)
        if isinstance(exc, SQLAlchemyError):
            core.raise_translated(exc)


class _TransactionScope:
    """``with provider.transaction() as s``: commit on success, rollback on any exception;
    inside another transaction() of the same thread, a SAVEPOINT on the same session."""

    __slots__ = ("_provider", "_session", "_token", "_tx")

    def __init__(self, provider: DBProvider) -> None:
        self._provider = provider

    def __enter__(self) -> Session:
        core = self._provider._core
        owner = threading.current_thread()
        joined = core.joinable(owner)
        self._token: Token[Any] | None = None
        if joined is None:
            self._provider._mark_write()
            session = self._session = self._provider._sessions()
            self._tx: SessionTransaction = session.begin().__enter__()
            self._token = core.active.set((session, owner))
            return session
        self._session = joined
        with core.translating():
            self._tx = joined.begin_nested().__enter__()
        return joined

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        core = self._provider._core
        try:
            self._tx.__exit__(exc_type, exc, tb)
        except SQLAlchemyError as end_exc:
            if exc is None:  # the commit failed (and was rolled back)
                core.raise_translated(end_exc)
            # a failed rollback after an error in the body: the body's error is reported below
        finally:
            if self._token is not None:
                core.active.reset(self._token)
                self._session.close()
        if isinstance(exc, SQLAlchemyError):
            core.raise_translated(exc)


class DBProvider(ProviderBase[Engine, Session], Closing):
    """Blocking database access for one service (the seed's ``db.Provider``).

    Build it with :func:`new` (config from coord) or directly from a :class:`DBConfig`.
    Thread-safe: the engine pools connections; each session()/transaction() gets its own Session.
    """

    def __init__(self, config: DBConfig, *, service: str = "") -> None:
        super().__init__(config, service=service, is_async=False, factory=create_engine)
        self._sessions = sessionmaker(self._engine, expire_on_commit=config.expire_on_commit)
        self._read_sessions = self._sessions
        self._checker: CheckerThread | None = None
        if self._router is not None:
            self._read_sessions = sessionmaker(
                self._engine,
                class_=RoutingSession,
                router=self._router,
                expire_on_commit=config.expire_on_commit,
            )
            self._checker = CheckerThread(self._router)

    def session(self) -> _SessionScope:
        """``with provider.session() as s:`` a Session you commit yourself; closed at the end.
        With replicas configured its plain reads go to a replica (see docs/db.md)."""
        checker = self._checker
        if checker is not None and checker.ident is None:
            with contextlib.suppress(RuntimeError):  # another thread started it meanwhile
                checker.start()
        return _SessionScope(self)

    def transaction(self) -> _TransactionScope:
        """``with provider.transaction() as s:`` commits on success, rolls back on any
        exception; nested in the same thread it becomes a SAVEPOINT of the outer one."""
        return _TransactionScope(self)

    def begin_tx(self) -> DBTransaction:
        """Start an explicit transaction on a new Session (the seed's ``BeginTx``)."""
        self._core.check_open()
        self._mark_write()
        return DBTransaction(self._sessions(), self._core)

    def ping(self) -> None:
        """Round-trip ``SELECT 1``; raises the DBError that says what is wrong."""
        with self._core.translating(check_open=True), self._engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1").scalar()

    def create_all(self, metadata: MetaData) -> None:
        """Create the tables of ``metadata`` that do not exist yet (tests and dev; use Alembic
        migrations in production)."""
        with self._core.translating(check_open=True):
            metadata.create_all(self._engine)

    def drop_all(self, metadata: MetaData) -> None:
        """Drop the tables of ``metadata`` that exist."""
        with self._core.translating(check_open=True):
            metadata.drop_all(self._engine)

    def close(self) -> None:
        """Close every pooled connection; idempotent. The provider cannot be used afterwards."""
        if self._core.closed:
            return
        self._core.closed = True
        self._untrack_pools()
        if self._checker is not None and self._checker.ident is not None:
            self._checker.stopping.set()
            self._checker.join()
        self._engine.dispose()
        for replica in self._replica_engines:
            replica.dispose()
