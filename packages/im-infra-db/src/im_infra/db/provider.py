"""The blocking provider: an Engine, Sessions and transactions for one database.

The logic is written once for both providers (``_internal/tx.py``); this module runs it with
blocking I/O, ``aio.py`` with asyncio.
"""

from __future__ import annotations

import contextlib
import threading

from sqlalchemy import Engine, MetaData, create_engine
from sqlalchemy.orm import Session, sessionmaker

from im_infra.clog.lifecycle import Closing
from im_infra.coord.deprecation import deprecated_names, warn_renamed
from im_infra.db._internal.core import ProviderBase
from im_infra.db._internal.flow import Exits, run
from im_infra.db._internal.replicas import CheckerThread, RoutingSession
from im_infra.db._internal.tx import SessionScopeFlows, TransactionFlows, TransactionScopeFlows
from im_infra.db.config import DBConfig

__all__ = ["DBProvider", "DBTransaction"]


class DBTransaction(TransactionFlows[Session], Exits):
    """An explicit transaction from :meth:`DBProvider.begin` (the seed's ``Transaction``).

    ``commit()`` twice raises TransactionError; ``rollback()`` after it finished is a no-op, so
    ``try: ... tx.commit() finally: tx.rollback()`` is safe. As a context manager it rolls back
    unless committed. Either way the session is closed when the transaction finishes.
    """

    __slots__ = ()

    @property
    def session(self) -> Session:
        """The Session to run statements in (the seed's ``Transaction.DB()``)."""
        return self._session

    def commit(self) -> None:
        """Commit; on failure the transaction is rolled back and a DBError raised."""
        run(self._commit())

    def rollback(self) -> None:
        """Roll back (no-op when already committed or rolled back)."""
        run(self._rollback())

    def __enter__(self) -> DBTransaction:
        return self


class _SessionScope(SessionScopeFlows[Session], Exits):
    """``with provider.session() as s``: see ``SessionScopeFlows``."""

    __slots__ = ()

    def __enter__(self) -> Session:
        return self._open()


class _TransactionScope(TransactionScopeFlows[Session], Exits):
    """``with provider.transaction() as s``: see ``TransactionScopeFlows`` (owner: the thread)."""

    __slots__ = ()

    def __enter__(self) -> Session:
        return run(self._enter(threading.current_thread()))


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

    def begin(self) -> DBTransaction:
        """Start an explicit transaction on a new Session (the seed's ``BeginTx``)."""
        return DBTransaction(run(self._begin()), self._core)

    def begin_tx(self) -> DBTransaction:
        """Deprecated alias of :meth:`begin` (the Go name; removed in 0.2.0)."""
        warn_renamed("Provider.begin_tx", "begin", "0.2.0")
        return self.begin()

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
        if not self._start_close():
            return
        if self._checker is not None and self._checker.ident is not None:
            self._checker.stopping.set()
            self._checker.join()
        self._engine.dispose()
        for replica in self._replica_engines:
            replica.dispose()


# ``new`` moved to im_infra.db.factory (docs/naming.md)
__getattr__ = deprecated_names(__name__, {"new": "im_infra.db.factory.new"}, "0.2.0")
