"""The outbox relay: publishes committed outbox events and marks them sent.

The relay publishes through a small :class:`Publisher` protocol that ``im_infra.mq``'s producer
satisfies as it is (db does not import mq)::

    producer = mq.new_producer("im-logic")
    relay = db.OutboxRelay(provider, producer, message=mq.Message)
    relay.run()                         # until relay.close() (or run(stop_event))

``message`` builds the publisher's message from ``(topic, key, value, headers)``; ``mq.Message``
is such a factory. Each round, in one database transaction: claim the oldest unsent event of up
to ``batch_size`` keys (``FOR UPDATE SKIP LOCKED``), read those keys' unsent events in id order,
publish them, wait for the delivery reports, mark the delivered ones sent, commit.

Guarantees: at-least-once (a relay killed between publish and commit publishes again); events of
one key in commit order (id order among events visible together); relays on one table on
PostgreSQL and MariaDB 10.6+/MySQL 8 never publish one event at the same time (row locks). SQLite
has no row locks: run one relay there (its round holds no lock while publishing).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any, Generic, Protocol, TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from im_infra.clog.lifecycle import AsyncClosing, Closing
from im_infra.db._internal.core import ProviderCore
from im_infra.db._internal.outbox_core import (
    DEFAULT_TABLE,
    Commit,
    Deliveries,
    OutboxEvent,
    OutboxStats,
    Query,
    RelayCore,
    RoundRunner,
)
from im_infra.db.aio import AsyncDBProvider
from im_infra.db.errors import DBError
from im_infra.db.provider import DBProvider

__all__ = [
    "AsyncOutboxRelay",
    "AsyncPublisher",
    "DeliveryReport",
    "MessageFactory",
    "OutboxEvent",
    "OutboxRelay",
    "OutboxStats",
    "Publisher",
]

M = TypeVar("M")
M_contra = TypeVar("M_contra", contravariant=True)
M_co = TypeVar("M_co", covariant=True)

#: Called once per message with None (delivered) or the exception describing the failure.
DeliveryReport = Callable[[Exception | None], object]


class Publisher(Protocol[M_contra]):
    """What the relay publishes through (``im_infra.mq.KafkaProducer`` is one)."""

    def send(self, msg: M_contra, callback: DeliveryReport | None = None) -> None:
        """Queue ``msg``; ``callback`` later gets its delivery result."""
        ...

    def flush(self, timeout: float | None = None) -> int:
        """Wait for queued messages; return how many are still undelivered."""
        ...


class AsyncPublisher(Protocol[M_contra]):
    """The asyncio form (``im_infra.mq.AsyncKafkaProducer`` is one)."""

    async def send(self, msg: M_contra, callback: DeliveryReport | None = None) -> None: ...

    async def flush(self, timeout: float | None = None) -> int: ...


class MessageFactory(Protocol[M_co]):
    """Builds the publisher's message (``im_infra.mq.Message`` is one)."""

    def __call__(
        self, topic: str, key: bytes | None, value: bytes | None, headers: dict[str, bytes]
    ) -> M_co: ...


ProviderT = TypeVar("ProviderT", DBProvider, AsyncDBProvider)
PublisherT = TypeVar("PublisherT")


class _RelayBase(Generic[ProviderT, PublisherT, M]):
    """Construction and settings shared by both relays (the logic itself is :class:`RelayCore`)."""

    def __init__(
        self,
        provider: ProviderT,
        publisher: PublisherT,
        *,
        message: MessageFactory[M],
        table: str = DEFAULT_TABLE,
        batch_size: int = 100,
        poll_interval: float = 0.2,
        publish_timeout: float = 30.0,
        retention: float | None = 86400.0,
        stats_interval: float = 5.0,
    ) -> None:
        self._db: ProviderCore[Any] = provider._core
        self._relay = RelayCore(
            backend=self._db.target.backend,
            server=self._db.target.server,
            table=table,
            batch_size=batch_size,
            poll_interval=poll_interval,
            publish_timeout=publish_timeout,
            retention=retention,
            stats_interval=stats_interval,
        )
        self._engine: Any = provider.engine  # narrowed by each relay
        self._publisher = publisher
        self._message = message
        self._stop = self._stop_event()

    def _stop_event(self) -> Any:
        """The event close() sets: a threading or an asyncio one."""
        raise NotImplementedError

    @property
    def last_stats(self) -> OutboxStats:
        """Backlog and oldest age as of the last check (what the metrics report)."""
        return self._relay.stats


class OutboxRelay(_RelayBase[DBProvider, Publisher[M], M], Closing):
    """Publishes the outbox of a blocking provider's database; see the module docs.

    ``batch_size``: keys claimed per round; ``poll_interval``: the pause when nothing is
    waiting; ``publish_timeout``: how long a round waits for delivery reports; ``retention``:
    sent events older than this many seconds are deleted (None keeps them); ``stats_interval``:
    how often the backlog metrics are refreshed.
    """

    _engine: Engine
    _stop: threading.Event

    def _stop_event(self) -> threading.Event:
        return threading.Event()

    def run_once(self) -> int:
        """One round; returns how many events were published and marked sent."""
        relay = self._relay
        with self._db.translating(check_open=True), self._engine.connect() as conn:
            if relay.isolation is not None:
                conn = conn.execution_options(isolation_level=relay.isolation)
            runner = RoundRunner(relay.round())  # closing conn rolls back what is not committed
            step = runner.advance()
            while step is not None:
                if isinstance(step, Query):
                    step = runner.advance(_rows(conn, step))
                elif isinstance(step, Commit):
                    conn.commit()
                    step = runner.advance()
                else:
                    step = runner.advance(self._publish(step.events))
            conn.commit()
        relay.finished(runner.result)
        return runner.result.published

    def stats(self) -> OutboxStats:
        """Query the backlog and the age of the oldest unsent event now."""
        with self._db.translating(check_open=True), self._engine.connect() as conn:
            row = conn.execute(self._relay.statements.backlog).one()
        return self._relay.record_stats(row)

    def purge(self, older_than: float) -> int:
        """Delete events sent more than ``older_than`` seconds ago; returns how many."""
        with self._db.translating(check_open=True), self._engine.begin() as conn:
            result = conn.execute(
                self._relay.statements.purge, {"before": time.time() - older_than}
            )
        return int(result.rowcount)

    def run(self, stop: threading.Event | None = None) -> None:
        """Relay until :meth:`close` (or ``stop`` is set). Database and publish errors are
        logged and retried with back-off; nothing but closing ends the loop."""
        relay = self._relay
        wake = stop or self._stop
        while not self._stop.is_set() and not wake.is_set():
            try:
                self.run_once()
                now = time.monotonic()
                if relay.stats_due(now):
                    self.stats()
                if relay.purge_due(now) and relay.retention is not None:
                    self.purge(relay.retention)
            except DBError as exc:
                relay.failed(exc)
            if relay.pause:
                wake.wait(relay.pause)

    def close(self) -> None:
        """Stop :meth:`run` (after its current round); idempotent. The provider and the
        publisher stay open: they belong to the caller."""
        self._stop.set()
        self._relay.close()

    def _publish(self, events: list[OutboxEvent]) -> list[BaseException | None]:
        deliveries = Deliveries(len(events))
        settled = threading.Condition()

        def report(index: int, error: Exception | None) -> None:
            with settled:
                deliveries.report(index, error)
                settled.notify_all()

        make = self._message
        for index, event in deliveries.to_send(events):
            try:
                msg = make(event.topic, event.key, event.value, event.headers)
                self._publisher.send(msg, partial(report, index))
            except Exception as exc:  # refused: this event (and its key) is retried later
                with settled:
                    deliveries.refused(index, event, exc)
        timeout = self._relay.publish_timeout
        deadline = time.monotonic() + timeout
        try:
            self._publisher.flush(timeout)
        except Exception as exc:  # what is not reported by the deadline counts as failed
            self._relay.log.warning("publisher flush failed", error_type=type(exc).__name__)
        with settled:
            settled.wait_for(
                lambda: not deliveries.missing, timeout=max(0.0, deadline - time.monotonic())
            )
            return deliveries.finish(timeout)


def _rows(conn: Connection, step: Query) -> list[Any] | None:
    result = conn.execute(step.statement, step.params)
    return list(result.all()) if result.returns_rows else None


class AsyncOutboxRelay(_RelayBase[AsyncDBProvider, AsyncPublisher[M], M], AsyncClosing):
    """The asyncio twin of :class:`OutboxRelay` (``await relay.run()``)."""

    _engine: AsyncEngine
    _stop: asyncio.Event

    def _stop_event(self) -> asyncio.Event:
        return asyncio.Event()

    async def run_once(self) -> int:
        """One round; returns how many events were published and marked sent."""
        relay = self._relay
        with self._db.translating(check_open=True):
            async with self._engine.connect() as conn:
                if relay.isolation is not None:
                    conn = await conn.execution_options(isolation_level=relay.isolation)
                runner = RoundRunner(relay.round())
                step = runner.advance()
                while step is not None:
                    if isinstance(step, Query):
                        step = runner.advance(await _async_rows(conn, step))
                    elif isinstance(step, Commit):
                        await conn.commit()
                        step = runner.advance()
                    else:
                        step = runner.advance(await self._publish(step.events))
                await conn.commit()
        relay.finished(runner.result)
        return runner.result.published

    async def stats(self) -> OutboxStats:
        """Query the backlog and the age of the oldest unsent event now."""
        with self._db.translating(check_open=True):
            async with self._engine.connect() as conn:
                row = (await conn.execute(self._relay.statements.backlog)).one()
        return self._relay.record_stats(row)

    async def purge(self, older_than: float) -> int:
        """Delete events sent more than ``older_than`` seconds ago; returns how many."""
        with self._db.translating(check_open=True):
            async with self._engine.begin() as conn:
                result = await conn.execute(
                    self._relay.statements.purge, {"before": time.time() - older_than}
                )
        return int(result.rowcount)

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Relay until :meth:`close` (or ``stop`` is set); errors are logged and retried."""
        relay = self._relay
        wake = stop or self._stop
        while not self._stop.is_set() and not wake.is_set():
            try:
                await self.run_once()
                now = time.monotonic()
                if relay.stats_due(now):
                    await self.stats()
                if relay.purge_due(now) and relay.retention is not None:
                    await self.purge(relay.retention)
            except DBError as exc:
                relay.failed(exc)
            if relay.pause:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), relay.pause)

    async def close(self) -> None:
        """Stop :meth:`run` (after its current round); idempotent."""
        self._stop.set()
        self._relay.close()

    async def _publish(self, events: list[OutboxEvent]) -> list[BaseException | None]:
        deliveries = Deliveries(len(events))
        settled = asyncio.Event()

        def report(index: int, error: Exception | None) -> None:
            deliveries.report(index, error)
            if not deliveries.missing:
                settled.set()

        make = self._message
        for index, event in deliveries.to_send(events):
            try:
                msg = make(event.topic, event.key, event.value, event.headers)
                await self._publisher.send(msg, partial(report, index))
            except Exception as exc:  # refused: this event (and its key) is retried later
                deliveries.refused(index, event, exc)
        timeout = self._relay.publish_timeout
        deadline = time.monotonic() + timeout
        if deliveries.missing:
            try:
                await self._publisher.flush(timeout)
            except Exception as exc:  # what is not reported by the deadline counts as failed
                self._relay.log.warning("publisher flush failed", error_type=type(exc).__name__)
        if deliveries.missing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(settled.wait(), max(0.0, deadline - time.monotonic()))
        return deliveries.finish(timeout)


async def _async_rows(conn: AsyncConnection, step: Query) -> list[Any] | None:
    result = await conn.execute(step.statement, step.params)
    return list(result.all()) if result.returns_rows else None
