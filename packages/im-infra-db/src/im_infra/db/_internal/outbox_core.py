"""The transactional outbox without I/O: table, statements, row encoding and the relay round.

The blocking and the asyncio drivers (``im_infra.db.outbox``) only execute what this module
builds: the statements are SQLAlchemy Core constructs made once per table, and one relay round
is a generator (:func:`relay_round`) yielding :class:`Query` / :class:`Publish` steps that either
driver runs.

Ordering per key under concurrent relays: a relay claims only the *head* of each key (its oldest
unsent event) with ``FOR UPDATE SKIP LOCKED``, then takes that key's following unsent events
without locking them. Another relay computes the same head for that key, finds it locked and
skips the whole key, so one key is only ever published by the relay holding its head, in id
order; the head stays unsent (and locked) until that relay commits the round's ``sent_at``.
"""

from __future__ import annotations

import base64
import json
import math
import time
from collections.abc import Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Double,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.sql import Delete, Insert, Select, Update

from im_infra import clog
from im_infra.db._internal import metrics
from im_infra.db.errors import OutboxError

DEFAULT_TABLE = "im_outbox"
TRACE_ID_HEADER = "trace_id"  # the header im_infra.mq's consumer binds as the trace id
MAX_TOPIC = 249  # Kafka's limit on topic names
MAX_KEY = 255


def outbox_columns() -> list[Column[Any]]:
    """The outbox table's columns (fresh objects: a Column belongs to one Table)."""
    return [
        Column(
            "id",
            BigInteger().with_variant(Integer(), "sqlite"),  # SQLite: the rowid alias
            primary_key=True,
            autoincrement=True,
        ),
        Column("topic", String(MAX_TOPIC), nullable=False),
        Column("key", String(MAX_KEY), nullable=True),
        Column(
            "value",
            LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb"),
            nullable=True,
        ),
        Column("headers", Text(), nullable=True),
        Column("trace_id", String(64), nullable=True),
        Column("created_at", Double(), nullable=False),
        Column("sent_at", Double(), nullable=True),
    ]


def outbox_indexes(name: str) -> list[tuple[str, list[str]]]:
    """(index name, columns): unsent events in id order, and the per-key head lookup."""
    return [
        (f"ix_{name}_pending", ["sent_at", "id"]),
        (f"ix_{name}_key", ["key", "sent_at", "id"]),
    ]


def outbox_table(metadata: MetaData, name: str = DEFAULT_TABLE) -> Table:
    """The outbox :class:`~sqlalchemy.Table` named ``name`` in ``metadata``."""
    table = Table(name, metadata, *outbox_columns())
    for index_name, columns in outbox_indexes(name):
        Index(index_name, *(table.c[c] for c in columns))
    return table


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    """One stored event, as the relay reads it."""

    id: int
    topic: str
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]
    created_at: float


def _encode_headers(headers: Mapping[str, bytes | str]) -> str:
    encoded: dict[str, str] = {}
    for name, raw in headers.items():
        if not isinstance(name, str) or not name:
            raise OutboxError(f"outbox header names must be non-empty strings, got {name!r}")
        data = raw.encode() if isinstance(raw, str) else raw
        if not isinstance(data, bytes):
            raise OutboxError(f"outbox header {name!r} must be bytes or str")
        encoded[name] = base64.b64encode(data).decode("ascii")
    return json.dumps(encoded, separators=(",", ":"))


def _decode_headers(text: str | None) -> dict[str, bytes]:
    if not text:
        return {}
    return {name: base64.b64decode(value) for name, value in json.loads(text).items()}


class OutboxStatements:
    """The statements of one outbox table, built once."""

    __slots__ = ("backlog", "heads", "insert", "mark_sent", "name", "pending", "purge", "table")

    def __init__(self, name: str = DEFAULT_TABLE) -> None:
        if not name or len(name) > 60 or not name.replace("_", "").isalnum():
            raise OutboxError(f"outbox table name {name!r}: use letters, digits and _ (<= 60)")
        self.name = name
        self.table = t = outbox_table(MetaData(), name)
        self.insert: Insert = insert(t)
        inner = t.alias("head")
        oldest_of_key = (
            select(func.min(inner.c.id))
            .where(inner.c.key == t.c.key, inner.c.sent_at.is_(None))
            .scalar_subquery()
        )
        self.heads: Select[Any] = (
            select(t.c.id, t.c.key)
            .where(t.c.sent_at.is_(None), or_(t.c.key.is_(None), t.c.id == oldest_of_key))
            .order_by(t.c.id)
            .limit(bindparam("limit"))
            .with_for_update(skip_locked=True)  # no-op on SQLite (one relay, see relay_round)
        )
        self.pending: Select[Any] = (
            select(t.c.id, t.c.topic, t.c.key, t.c.value, t.c.headers, t.c.trace_id, t.c.created_at)
            .where(
                t.c.sent_at.is_(None),
                or_(
                    t.c.id.in_(bindparam("ids", expanding=True)),
                    t.c.key.in_(bindparam("keys", expanding=True)),
                ),
            )
            .order_by(t.c.id)
            .limit(bindparam("limit"))
        )
        self.mark_sent: Update = (
            update(t)
            .where(t.c.id.in_(bindparam("ids", expanding=True)))
            .values(sent_at=bindparam("now"))
        )
        self.backlog: Select[Any, Any] = select(func.count(), func.min(t.c.created_at)).where(
            t.c.sent_at.is_(None)
        )
        self.purge: Delete = delete(t).where(t.c.sent_at < bindparam("before"))

    def row(
        self,
        topic: str,
        key: bytes | str | None,
        value: bytes | str | None,
        headers: Mapping[str, bytes | str] | None,
    ) -> dict[str, Any]:
        """The parameters of one insert; the current clog trace id is captured here."""
        if not isinstance(topic, str) or not topic or len(topic) > MAX_TOPIC:
            raise OutboxError(f"outbox topic must be a non-empty string of <= {MAX_TOPIC} chars")
        if isinstance(key, bytes):
            try:
                key = key.decode()
            except UnicodeDecodeError:
                raise OutboxError("outbox key must be UTF-8 text (str or UTF-8 bytes)") from None
        if key is not None and (not isinstance(key, str) or len(key) > MAX_KEY):
            raise OutboxError(f"outbox key must be a string of <= {MAX_KEY} chars or None")
        if isinstance(value, str):
            value = value.encode()
        elif value is not None and not isinstance(value, bytes):
            raise OutboxError(
                f"outbox value must be bytes, str or None, not {type(value).__name__}"
            )
        tid = clog.trace_id()
        return {
            "topic": topic,
            "key": key,
            "value": value,
            "headers": _encode_headers(headers) if headers else None,
            "trace_id": tid,
            "created_at": time.time(),
        }


def event_from_row(row: Sequence[Any]) -> OutboxEvent:
    """An :class:`OutboxEvent` from a row of ``OutboxStatements.pending``; the trace id
    captured by ``add()`` becomes the ``trace_id`` header unless the event set that header."""
    ident, topic, key, value, headers_text, trace_id, created_at = row
    headers = _decode_headers(headers_text)
    if trace_id and TRACE_ID_HEADER not in headers:
        headers[TRACE_ID_HEADER] = trace_id.encode()
    return OutboxEvent(
        id=int(ident),
        topic=topic,
        key=None if key is None else key.encode(),
        value=None if value is None else bytes(value),
        headers=headers,
        created_at=float(created_at),
    )


# ---------------------------------------------------------------------------- the relay round
@dataclass(frozen=True, slots=True)
class Query:
    """Execute ``statement`` with ``params`` in the round's transaction; reply: the rows."""

    statement: Any
    params: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Publish:
    """Publish ``events`` in order; reply: one ``Exception | None`` per event."""

    events: list[OutboxEvent]


@dataclass(frozen=True, slots=True)
class Commit:
    """Commit the round's transaction so far; the next statement starts a new one."""


Step = Query | Publish | Commit


@dataclass(frozen=True, slots=True)
class RoundResult:
    """What one relay round did."""

    published: int
    failed: int
    errors: tuple[BaseException, ...] = ()


def sent_prefix(
    events: Sequence[OutboxEvent], results: Sequence[BaseException | None]
) -> list[int]:
    """Ids to mark sent: per key, the events up to (not including) its first failure.

    A later event of a key whose earlier event failed stays unsent even when it was delivered,
    so the retry publishes the key's events again in order (duplicates, never a reordering
    once the retry succeeds). Events without a key are independent.
    """
    blocked: set[bytes] = set()
    ids: list[int] = []
    for event, error in zip(events, results, strict=True):
        if event.key is not None and event.key in blocked:
            continue
        if error is None:
            ids.append(event.id)
        elif event.key is not None:
            blocked.add(event.key)
    return ids


def relay_round(
    statements: OutboxStatements, batch_size: int, *, row_locks: bool
) -> Generator[Step, Any, RoundResult]:
    """One relay round: claim heads, read their keys' events, publish, mark.

    With ``row_locks`` (PostgreSQL, MariaDB/MySQL) it is one transaction, so the claimed heads
    stay locked while their events are published. SQLite has no row locks and one writer: there
    the reading transaction ends (:class:`Commit`) before publishing and the marking is a short
    transaction of its own, so the database is never locked while the publisher waits (a
    second relay would publish the same events: run one relay on SQLite).
    """
    heads = yield Query(statements.heads, {"limit": batch_size})
    if not heads:
        return RoundResult(0, 0)
    ids = [row[0] for row in heads if row[1] is None]
    keys = sorted({row[1] for row in heads if row[1] is not None})
    rows = yield Query(
        statements.pending, {"ids": ids, "keys": keys, "limit": max(batch_size, len(heads)) * 4}
    )
    events = [event_from_row(row) for row in rows]
    if not row_locks:
        yield Commit()
    results: list[BaseException | None] = yield Publish(events)
    done = sent_prefix(events, results)
    if done:
        yield Query(statements.mark_sent, {"ids": done, "now": time.time()})
    errors = tuple(error for error in results if error is not None)
    return RoundResult(len(done), len(events) - len(done), errors)


class Deliveries:
    """Delivery results of one round's messages, filled in by publisher callbacks.

    Once handing an event to the publisher fails, the later events of its key are not handed
    over in this round (they would overtake it on the retry).
    """

    __slots__ = ("blocked", "missing", "results")

    def __init__(self, count: int) -> None:
        self.results: list[BaseException | None] = [None] * count
        self.missing = set(range(count))
        self.blocked: set[bytes] = set()

    def to_send(self, events: list[OutboxEvent]) -> Iterator[tuple[int, OutboxEvent]]:
        """The events to hand over, with their index: an event whose key already failed in
        this round is not (it is counted as failed; it would overtake the failed one)."""
        for index, event in enumerate(events):
            if event.key is None or event.key not in self.blocked:
                yield index, event
            else:
                self.report(index, OutboxError("not sent: an earlier event of its key failed"))

    def refused(self, index: int, event: OutboxEvent, error: BaseException) -> None:
        """The publisher raised instead of accepting ``event``."""
        self.report(index, error)
        if event.key is not None:
            self.blocked.add(event.key)

    def report(self, index: int, error: BaseException | None) -> None:
        """Record the result of message ``index`` (the first report wins)."""
        if index in self.missing:
            self.missing.discard(index)
            self.results[index] = error

    def finish(self, timeout: float) -> list[BaseException | None]:
        """The results, every message without a report counted as failed."""
        for index in list(self.missing):  # a late report may still arrive: it is ignored
            self.missing.discard(index)
            self.results[index] = OutboxError(f"no delivery report within {timeout:.1f}s")
        return self.results


@dataclass(frozen=True, slots=True)
class OutboxStats:
    """Unsent events and the age in seconds of the oldest one (0 when none)."""

    backlog: int
    oldest_age: float


class RelayCore:
    """A relay's settings, its statements, pacing and metrics: everything but the I/O."""

    __slots__ = (
        "__weakref__",
        "_delay",
        "_last_purge",
        "_last_stats",
        "batch_size",
        "isolation",
        "log",
        "pause",
        "poll_interval",
        "publish_timeout",
        "retention",
        "row_locks",
        "statements",
        "stats",
        "stats_interval",
    )

    def __init__(
        self,
        *,
        backend: str,
        server: str,
        table: str,
        batch_size: int,
        poll_interval: float,
        publish_timeout: float,
        retention: float | None,
        stats_interval: float,
    ) -> None:
        if batch_size < 1:
            raise OutboxError(f"outbox relay batch_size must be >= 1, got {batch_size}")
        for name, seconds in (
            ("poll_interval", poll_interval),
            ("publish_timeout", publish_timeout),
            ("stats_interval", stats_interval),
        ):
            if not seconds > 0:
                raise OutboxError(f"outbox relay {name} must be > 0 seconds, got {seconds}")
        if retention is not None and retention < 0:
            raise OutboxError(f"outbox relay retention must be >= 0 or None, got {retention}")
        self.statements = OutboxStatements(table)
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.publish_timeout = publish_timeout
        self.retention = retention
        self.stats_interval = stats_interval
        self.row_locks = backend != "sqlite"
        # READ COMMITTED: no gap locks on MySQL/MariaDB (REPEATABLE READ's next-key locks on
        # the pending index would block the application's inserts while a round publishes).
        self.isolation = None if backend == "sqlite" else "READ COMMITTED"
        self.log = clog.get_logger("db").named("outbox").bind(db=server, outbox=table)
        self.stats = OutboxStats(0, 0.0)
        self._delay = 0.0
        self.pause = 0.0  # before the next round, as decided by the last one
        self._last_purge = self._last_stats = -math.inf
        metrics.track_outbox(self)

    def round(self) -> Generator[Step, Any, RoundResult]:
        """The steps of one relay round."""
        return relay_round(self.statements, self.batch_size, row_locks=self.row_locks)

    def finished(self, result: RoundResult) -> None:
        """Record a round and decide the pause before the next one."""
        table = self.statements.name
        if result.published:
            metrics.outbox_published.add(result.published, {metrics.OUTBOX: table})
        if result.failed:
            metrics.outbox_failed.add(result.failed, {metrics.OUTBOX: table})
            first = result.errors[0] if result.errors else None
            self.log.warning(
                "outbox events not published; retrying",
                published=result.published,
                failed=result.failed,
                error_type=type(first).__name__,
                error_message=str(first),
            )
            self._back_off()
            return
        self._delay = 0.0
        # Events claimed: more may be waiting, go on at once. Otherwise wait for new events.
        self.pause = 0.0 if result.published else self.poll_interval

    def failed(self, error: BaseException) -> None:
        """Record a round that failed (database error) and back off."""
        self.log.warning(
            "outbox relay round failed; retrying",
            error_type=type(error).__name__,
            error_message=str(error),
        )
        self._back_off()

    def _back_off(self) -> None:
        self._delay = min(max(self._delay * 2, self.poll_interval), 5.0)
        self.pause = self._delay

    def stats_due(self, now: float) -> bool:
        if now - self._last_stats < self.stats_interval:
            return False
        self._last_stats = now
        return True

    def purge_due(self, now: float) -> bool:
        """Whether to purge sent events now (once a minute when a retention is set)."""
        if self.retention is None or now - self._last_purge < 60.0:
            return False
        self._last_purge = now
        return True

    def record_stats(self, row: Sequence[Any]) -> OutboxStats:
        """Stats from a row of ``statements.backlog``, kept for the metrics."""
        count, oldest = row
        age = max(0.0, time.time() - float(oldest)) if oldest is not None else 0.0
        self.stats = OutboxStats(int(count), age)
        return self.stats

    def close(self) -> None:
        metrics.untrack_outbox(self)


class RoundRunner:
    """Steps a relay round: ``advance(reply)`` gives the next step, or None when the round is
    over (its :class:`RoundResult` is then in ``result``)."""

    __slots__ = ("_flow", "result")

    def __init__(self, flow: Generator[Step, Any, RoundResult]) -> None:
        self._flow = flow
        self.result = RoundResult(0, 0)

    def advance(self, reply: Any = None) -> Step | None:
        try:
            return self._flow.send(reply)
        except StopIteration as stop:
            self.result = stop.value
            return None
