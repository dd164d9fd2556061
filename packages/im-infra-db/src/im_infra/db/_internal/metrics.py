"""The db component's OpenTelemetry instruments (API only: no-ops until an SDK is installed).

Created once at import through ``opentelemetry.metrics``' proxy meter, so an SDK installed later
(in any order) receives them. Names follow the OpenTelemetry database semantic conventions where
they exist (``db.client.operation.duration``, ``db.client.connection.count``), otherwise
``im_infra.db.*``. Attributes are low-cardinality only: never SQL text, keys or ids.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable, Mapping
from typing import Any

from opentelemetry.metrics import CallbackOptions, Observation

from im_infra.clog import telemetry
from im_infra.db.errors import DBError

__all__ = [
    "StatementAttributes",
    "errors",
    "operation_duration",
    "record_error",
    "slow_queries",
    "track_pool",
    "untrack_pool",
]

SYSTEM = "db.system.name"
OPERATION = "db.operation.name"
ERROR_TYPE = "error.type"
POOL_NAME = "db.client.connection.pool.name"
STATE = "db.client.connection.state"


meter = telemetry.meter("db")

operation_duration = meter.create_histogram(
    "db.client.operation.duration",
    unit="s",
    description="Duration of database client operations (one DBAPI execute).",
    explicit_bucket_boundaries_advisory=[0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0],
)
slow_queries = meter.create_counter(
    "im_infra.db.slow_queries",
    unit="{query}",
    description="Statements that took at least slowThreshold.",
)
errors = meter.create_counter(
    "im_infra.db.errors",
    unit="{error}",
    description="Errors raised to the caller, by DBError subclass.",
)

# Statement keywords reported as db.operation.name; anything else carries no operation name.
_OPERATIONS = frozenset(
    {
        "ALTER",
        "BEGIN",
        "CALL",
        "COMMIT",
        "CREATE",
        "DELETE",
        "DROP",
        "EXPLAIN",
        "INSERT",
        "PRAGMA",
        "RELEASE",
        "REPLACE",
        "ROLLBACK",
        "SAVEPOINT",
        "SELECT",
        "SET",
        "SHOW",
        "TRUNCATE",
        "UPDATE",
        "WITH",
    }
)
_STATEMENT_CACHE_SIZE = 2048


class StatementAttributes:
    """Pre-bound attribute dicts of one engine, looked up by statement text.

    SQLAlchemy hands the same (cached, compiled) statement string to every execution of a
    statement, so after the first execution the attributes cost one dict lookup. The cache is
    bounded (cleared when full) and holds at most one small dict per distinct operation name.
    """

    __slots__ = ("_by_operation", "_by_statement", "_system")

    def __init__(self, system: str) -> None:
        self._system = system
        self._by_operation: dict[str | None, Mapping[str, str]] = {}
        self._by_statement: dict[str, Mapping[str, str]] = {}

    def __call__(self, statement: str) -> Mapping[str, str]:
        """The attributes of ``statement`` (system and operation name, never the SQL)."""
        attrs = self._by_statement.get(statement)
        if attrs is None:
            attrs = self._for_operation(operation_name(statement))
            if len(self._by_statement) >= _STATEMENT_CACHE_SIZE:
                self._by_statement.clear()
            self._by_statement[statement] = attrs
        return attrs

    def _for_operation(self, operation: str | None) -> Mapping[str, str]:
        attrs = self._by_operation.get(operation)
        if attrs is None:
            attrs = {SYSTEM: self._system}
            if operation is not None:
                attrs[OPERATION] = operation
            self._by_operation[operation] = attrs
        return attrs

    def failed(self, statement: str, exc: BaseException) -> Mapping[str, str]:
        """The attributes of a failed execution: those of ``statement`` plus ``error.type``
        (the driver's exception class). Error path only: builds a new dict."""
        return {**self(statement), ERROR_TYPE: type(exc).__name__}


def operation_name(statement: str) -> str | None:
    """The statement's leading keyword (``SELECT``, ``INSERT``…) when it is a known one."""
    head = statement.lstrip(" \t\r\n(").split(None, 1)
    if not head:
        return None
    word = head[0].rstrip(";").upper()
    return word if word in _OPERATIONS else None


def record_error(error: DBError, system: str) -> None:
    """Count one error raised to the caller (error path only)."""
    errors.add(1, {SYSTEM: system, ERROR_TYPE: type(error).__name__})


# -- connection pools: observed at collection time, nothing on the hot path ---
_pools: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
_pools_lock = threading.Lock()


def track_pool(engine: Any, pool_name: str) -> None:
    """Report the pool of ``engine`` (a sync Engine or an AsyncEngine's ``sync_engine``) in
    ``db.client.connection.count`` until :func:`untrack_pool` (or the engine is collected).
    The pool is read at collection time (``engine.pool``: dispose() replaces it)."""
    with _pools_lock:
        _pools[engine] = pool_name


def untrack_pool(engine: Any) -> None:
    """Stop reporting the pool of ``engine`` (idempotent)."""
    with _pools_lock:
        _pools.pop(engine, None)


def _pool_counts(pool: Any) -> tuple[int, int] | None:
    """(used, idle) of a QueuePool-like pool; None for pools that do not count (Static…)."""
    checkedout = getattr(pool, "checkedout", None)
    checkedin = getattr(pool, "checkedin", None)
    if checkedout is None or checkedin is None:
        return None
    return int(checkedout()), int(checkedin())


def _observe_pools(_options: CallbackOptions) -> Iterable[Observation]:
    with _pools_lock:
        tracked = list(_pools.items())
    totals: dict[str, list[int]] = {}
    for engine, name in tracked:
        counts = _pool_counts(engine.pool)
        if counts is None:
            continue
        total = totals.setdefault(name, [0, 0])
        total[0] += counts[0]
        total[1] += counts[1]
    for name, (used, idle) in totals.items():
        yield Observation(used, {POOL_NAME: name, STATE: "used"})
        yield Observation(idle, {POOL_NAME: name, STATE: "idle"})


connection_count = meter.create_observable_up_down_counter(
    "db.client.connection.count",
    callbacks=[_observe_pools],
    unit="{connection}",
    description="Connections of each provider's pool, by state (used = checked out, idle).",
)


# -- transactional outbox: counters on the relay's path, gauges read from the relays' last stats
OUTBOX = "im_infra.db.outbox.table"

outbox_published = meter.create_counter(
    "im_infra.db.outbox.published",
    unit="{event}",
    description="Outbox events published and marked sent by a relay.",
)
outbox_failed = meter.create_counter(
    "im_infra.db.outbox.publish_failures",
    unit="{event}",
    description="Outbox events a relay round could not publish (retried).",
)
_relays: weakref.WeakSet[Any] = weakref.WeakSet()


def track_outbox(relay: Any) -> None:
    """Report ``relay.stats`` (backlog, oldest_age) in the outbox gauges until untracked."""
    with _pools_lock:
        _relays.add(relay)


def untrack_outbox(relay: Any) -> None:
    with _pools_lock:
        _relays.discard(relay)


def _outbox_stats() -> dict[str, tuple[int, float]]:
    """Per table: the largest backlog and age any tracked relay last saw."""
    with _pools_lock:
        relays = list(_relays)
    seen: dict[str, tuple[int, float]] = {}
    for relay in relays:
        stats, name = relay.stats, relay.statements.name
        backlog, age = seen.get(name, (0, 0.0))
        seen[name] = (max(backlog, stats.backlog), max(age, stats.oldest_age))
    return seen


def _observe_backlog(_options: CallbackOptions) -> Iterable[Observation]:
    for name, (backlog, _age) in _outbox_stats().items():
        yield Observation(backlog, {OUTBOX: name})


def _observe_age(_options: CallbackOptions) -> Iterable[Observation]:
    for name, (_backlog, age) in _outbox_stats().items():
        yield Observation(age, {OUTBOX: name})


outbox_backlog = meter.create_observable_gauge(
    "im_infra.db.outbox.backlog",
    callbacks=[_observe_backlog],
    unit="{event}",
    description="Unsent outbox events (as of the relay's last check, every statsInterval).",
)
outbox_oldest_age = meter.create_observable_gauge(
    "im_infra.db.outbox.oldest_age",
    callbacks=[_observe_age],
    unit="s",
    description="Age of the oldest unsent outbox event (as of the relay's last check).",
)
