"""The seed's interfaces as Protocols: business code types against these."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager, AbstractContextManager
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from sqlalchemy import Engine, MetaData
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

__all__ = ["AsyncProvider", "AsyncTransaction", "Provider", "Transaction"]


@runtime_checkable
class Transaction(Protocol):
    """The seed's ``Transaction``: ``DB()`` is ``.session``."""

    @property
    def session(self) -> Session: ...
    def commit(self) -> None: ...
    def rollback(self) -> None: ...


@runtime_checkable
class Provider(Protocol):
    """The seed's ``db.Provider``: ``DB()`` is ``.engine`` / ``.session()``; ``BeginTx`` is
    ``begin()`` (``begin_tx()``, its former name, still works on the implementations with a
    DeprecationWarning until 0.2.0); ``transaction()`` is the everyday commit-or-rollback form."""

    @property
    def engine(self) -> Engine: ...
    def session(self) -> AbstractContextManager[Session]: ...
    def transaction(self) -> AbstractContextManager[Session]: ...
    def begin(self) -> Transaction: ...
    def ping(self) -> None: ...
    def create_all(self, metadata: MetaData) -> None: ...
    def close(self) -> None: ...


@runtime_checkable
class AsyncTransaction(Protocol):
    """Asyncio form of :class:`Transaction`."""

    @property
    def session(self) -> AsyncSession: ...
    async def commit(self) -> None: ...
    async def rollback(self) -> None: ...


@runtime_checkable
class AsyncProvider(Protocol):
    """Asyncio form of :class:`Provider`."""

    @property
    def engine(self) -> AsyncEngine: ...
    def session(self) -> AbstractAsyncContextManager[AsyncSession]: ...
    def transaction(self) -> AbstractAsyncContextManager[AsyncSession]: ...
    async def begin(self) -> AsyncTransaction: ...
    async def ping(self) -> None: ...
    async def create_all(self, metadata: MetaData) -> None: ...
    async def close(self) -> None: ...


if TYPE_CHECKING:  # mypy proves the concrete classes satisfy the Protocols
    from im_infra.db.aio import AsyncDBProvider, AsyncDBTransaction
    from im_infra.db.config import DBConfig
    from im_infra.db.provider import DBProvider, DBTransaction

    _provider: Provider = DBProvider(DBConfig())
    _transaction: type[Transaction] = DBTransaction
    _aprovider: AsyncProvider = AsyncDBProvider(DBConfig())
    _atransaction: type[AsyncTransaction] = AsyncDBTransaction
