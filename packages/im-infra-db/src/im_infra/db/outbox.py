"""The transactional outbox: events written in the same transaction as the data they announce.

::

    outbox = db.Outbox(provider)  # table im_outbox (Alembic: db.create_outbox_table)
    with provider.transaction() as s:
        s.execute(insert(messages).values(...))
        outbox.add("chat.stored", key=conv_id, value=payload)   # same transaction
    # a relay (db.OutboxRelay) publishes committed events, in commit order per key

``add()`` joins the transaction that ``provider.transaction()`` has open in the current thread
(asyncio: task), or the Session passed as ``session=`` (e.g. ``begin().session``); outside
one it raises :class:`OutboxError`: an event written in its own transaction would be the dual
write the outbox exists to avoid. The current clog trace id is stored with the event and
published as its ``trace_id`` header.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from typing import Any, Generic, TypeVar

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from im_infra.db._internal.outbox_core import (
    DEFAULT_TABLE,
    OutboxStatements,
    outbox_columns,
    outbox_indexes,
    outbox_table,
)
from im_infra.db.aio import AsyncDBProvider
from im_infra.db.errors import OutboxError
from im_infra.db.provider import DBProvider

__all__ = [
    "DEFAULT_TABLE",
    "AsyncOutbox",
    "Outbox",
    "create_outbox_table",
    "drop_outbox_table",
    "outbox_table",
]

Headers = Mapping[str, bytes | str]

_NO_TRANSACTION = (
    "outbox.add() must run inside provider.transaction() (or get session=): the event has to "
    "commit or roll back with the data it announces"
)


ProviderT = TypeVar("ProviderT", DBProvider, AsyncDBProvider)


class _OutboxBase(Generic[ProviderT]):
    """What both outboxes share: the table and the session an event goes into."""

    __slots__ = ("_provider", "_statements")

    def __init__(self, provider: ProviderT, *, table: str = DEFAULT_TABLE) -> None:
        self._provider: ProviderT = provider
        self._statements = OutboxStatements(table)

    @property
    def table(self) -> Table:
        """The outbox table (for ``create_all`` in tests; Alembic in production)."""
        return self._statements.table

    def _session(self, session: Any, owner: object) -> Any:
        """``session``, else the one of the transaction ``owner`` (thread or task) has open."""
        if session is not None:
            return session
        joined = self._provider._core.joinable(owner)
        if joined is None:
            raise OutboxError(_NO_TRANSACTION, server=self._provider.server)
        return joined


class Outbox(_OutboxBase[DBProvider]):
    """Writes events into the outbox table of a blocking provider's database."""

    __slots__ = ()

    def add(
        self,
        topic: str,
        key: bytes | str | None = None,
        value: bytes | str | None = None,
        headers: Headers | None = None,
        *,
        session: Session | None = None,
    ) -> None:
        """Store one event in the current transaction (see the module docs).

        ``key`` orders events (same key: published in commit order) and becomes the message
        key; it must be UTF-8 text of at most 255 characters. ``value`` is the payload.
        """
        params = self._statements.row(topic, key, value, headers)
        target: Session = self._session(session, threading.current_thread())
        with self._provider._core.translating():
            target.execute(self._statements.insert, params)


class AsyncOutbox(_OutboxBase[AsyncDBProvider]):
    """The asyncio twin of :class:`Outbox` (``await outbox.add(...)``)."""

    __slots__ = ()

    async def add(
        self,
        topic: str,
        key: bytes | str | None = None,
        value: bytes | str | None = None,
        headers: Headers | None = None,
        *,
        session: AsyncSession | None = None,
    ) -> None:
        """Store one event in the current task's transaction; see :meth:`Outbox.add`."""
        params = self._statements.row(topic, key, value, headers)
        target: AsyncSession = self._session(session, asyncio.current_task())
        with self._provider._core.translating():
            await target.execute(self._statements.insert, params)


def create_outbox_table(op: Any, name: str = DEFAULT_TABLE) -> None:
    """Create the outbox table and its indexes in an Alembic migration (``op`` is
    ``alembic.op``); the same table as :func:`outbox_table` / ``Outbox(...).table``."""
    OutboxStatements(name)  # validates the name
    op.create_table(name, *outbox_columns())
    for index_name, columns in outbox_indexes(name):
        op.create_index(index_name, name, columns)


def drop_outbox_table(op: Any, name: str = DEFAULT_TABLE) -> None:
    """Drop the outbox table (the downgrade of :func:`create_outbox_table`)."""
    for index_name, _columns in outbox_indexes(name):
        op.drop_index(index_name, table_name=name)
    op.drop_table(name)
