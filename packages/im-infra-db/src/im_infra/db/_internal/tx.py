"""Sessions and transactions as flows: the logic of ``session()``, ``transaction()`` and
``begin()`` written once for the blocking and the asyncio provider (``flow.py`` says how).

The public classes in ``provider.py`` and ``aio.py`` subclass these with ``Session`` or
``AsyncSession`` and only choose the driver (``run`` / ``await arun``).
"""

from __future__ import annotations

import contextlib
from contextvars import Token
from typing import TYPE_CHECKING, Any, Generic

from sqlalchemy.exc import SQLAlchemyError

from im_infra.db._internal.core import SessionT
from im_infra.db._internal.flow import Call, Enter, Exit, Flow
from im_infra.db.errors import DBError, TransactionError

if TYPE_CHECKING:
    from im_infra.db._internal.core import ProviderBase, ProviderCore


class TransactionFlows(Generic[SessionT]):
    """An explicit transaction (the seed's ``Transaction``): ``commit()`` twice raises
    TransactionError; ``rollback()`` after it finished is a no-op; either closes the session."""

    __slots__ = ("_core", "_outcome", "_session")

    def __init__(self, session: SessionT, core: ProviderCore[SessionT]) -> None:
        self._session: SessionT = session
        self._core: ProviderCore[SessionT] = core
        self._outcome: str | None = None

    @property
    def finished(self) -> bool:
        """Whether commit() or rollback() already ran."""
        return self._outcome is not None

    def _commit(self) -> Flow[None]:
        if self._outcome is not None:
            server = self._core.target.server
            raise TransactionError(
                f"{server}: cannot commit, the transaction was already {self._outcome}",
                server=server,
            )
        self._outcome = "committed"
        try:
            with self._core.translating():
                yield Call(self._session.commit)
        finally:
            yield Call(self._session.close)

    def _rollback(self) -> Flow[None]:
        if self._outcome is not None:
            return
        self._outcome = "rolled back"
        try:
            with self._core.translating():
                yield Call(self._session.rollback)
        finally:
            yield Call(self._session.close)

    def _exit(self, exc: BaseException | None) -> Flow[None]:
        """Leaving ``with``: roll back unless committed; the body's error is the one reported."""
        if exc is None:
            yield from self._rollback()
            return
        with contextlib.suppress(DBError):
            yield from self._rollback()
        if isinstance(exc, SQLAlchemyError):
            self._core.raise_translated(exc)


class SessionScopeFlows(Generic[SessionT]):
    """``session()``: a plain session, closed (uncommitted work rolled back) at the end;
    SQLAlchemy errors leaving the block become DBErrors."""

    __slots__ = ("_provider", "_session")

    def __init__(self, provider: ProviderBase[Any, SessionT]) -> None:
        self._provider: ProviderBase[Any, SessionT] = provider

    def _open(self) -> SessionT:
        self._provider._core.check_open()
        self._session: SessionT = self._provider._read_sessions()
        return self._session

    def _exit(self, exc: BaseException | None) -> Flow[None]:
        core = self._provider._core
        try:
            yield Call(self._session.close)
        except SQLAlchemyError as close_exc:
            if exc is None:
                core.raise_translated(close_exc)
        if isinstance(exc, SQLAlchemyError):
            core.raise_translated(exc)


class TransactionScopeFlows(Generic[SessionT]):
    """``transaction()``: commit on success, rollback on any exception; entered while the same
    owner (thread or task) has one open, a SAVEPOINT on that transaction's session."""

    __slots__ = ("_provider", "_session", "_token", "_tx")

    def __init__(self, provider: ProviderBase[Any, SessionT]) -> None:
        self._provider: ProviderBase[Any, SessionT] = provider

    def _enter(self, owner: object) -> Flow[SessionT]:
        provider = self._provider
        core = provider._core
        joined = core.joinable(owner)
        self._token: Token[Any] | None = None
        if joined is None:
            provider._mark_write()
            session: SessionT = provider._sessions()
            self._session: SessionT = session
            self._tx: Any = yield Enter(session.begin())
            self._token = core.active.set((session, owner))
            return session
        self._session = joined
        with core.translating():
            self._tx = yield Enter(joined.begin_nested())
        return joined

    def _exit(self, exc: BaseException | None) -> Flow[None]:
        core = self._provider._core
        try:
            yield Exit(self._tx, exc)
        except SQLAlchemyError as end_exc:
            if exc is None:  # the commit failed (and was rolled back)
                core.raise_translated(end_exc)
            # a failed rollback after an error in the body: the body's error is reported below
        finally:
            if self._token is not None:
                core.active.reset(self._token)
                yield Call(self._session.close)
        if isinstance(exc, SQLAlchemyError):
            core.raise_translated(exc)
