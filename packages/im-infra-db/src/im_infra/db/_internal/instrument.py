"""Statement timing (duration metric, slow-query log and count) and pool logging, on SQLAlchemy
engine events.

Hot path: one listener around each DBAPI execute: two ``perf_counter()`` calls, a dict lookup
for the statement's pre-bound metric attributes, one histogram ``record`` (a no-op call until an
OpenTelemetry SDK is installed) and a comparison with the slow threshold.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from time import perf_counter
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine, ExceptionContext

from im_infra.clog import Logger
from im_infra.db._internal import metrics
from im_infra.db._internal.sqltext import redact_sql
from im_infra.db._internal.target import Target
from im_infra.db._internal.translate import translate


class SlowThreshold:
    """The slow-query threshold in seconds, changeable while statements run (live config);
    0 or less disables the check."""

    __slots__ = ("seconds",)

    def __init__(self, seconds: float) -> None:
        self.seconds = math.inf
        self.set(seconds)

    def set(self, seconds: float) -> None:
        self.seconds = seconds if seconds > 0 else math.inf


def install(engine: Engine, *, target: Target, slow_threshold: SlowThreshold, log: Logger) -> None:
    """Attach the statement timer (metrics, slow-query log) and the logging listeners to
    ``engine`` (a sync Engine, or an AsyncEngine's ``sync_engine``). Every line carries the
    current trace id (clog adds it)."""
    _install_statement_timer(engine, target, slow_threshold, log)

    @event.listens_for(engine, "handle_error")
    def _on_error(ctx: ExceptionContext) -> None:
        # Errors reaching the caller are logged where they are translated (core.raise_translated);
        # here only the ones the pool absorbs: a pre-ping found a dead pooled connection.
        if ctx.is_pre_ping:
            error = translate(ctx.sqlalchemy_exception or ctx.original_exception, target)
            log.info(
                "stale pooled connection replaced",
                error_type=type(error).__name__,
                error_message=str(error),
            )


def _param_summary(params: Any, many: bool) -> str:
    """What the log says about bound values: how many, never what."""
    if not params:
        return "none"
    if many and isinstance(params, list | tuple):
        return f"<redacted: {len(params)} rows>"
    if isinstance(params, dict | list | tuple):
        return f"<redacted: {len(params)} values>"
    return "<redacted>"


def _install_statement_timer(
    engine: Engine, target: Target, slow: SlowThreshold, log: Logger
) -> None:
    """Time every statement on the dialect's execute hooks (DialectEvents ``do_execute*``): the
    one timing feeds ``db.client.operation.duration``, the slow-query log and
    ``im_infra.db.slow_queries`` (a threshold of 0: no slow-query check).

    These engine events wrap exactly the DBAPI ``cursor.execute`` call: the listener runs the
    dialect's own method, times it and returns True ("handled"). Unlike the ConnectionEvents
    ``before/after_cursor_execute`` pair they do not switch on SQLAlchemy's per-connection event
    dispatch (begin, commit, rollback, …), so a statement costs one extra Python call.
    """
    dialect = engine.dialect
    attributes = metrics.StatementAttributes(target.backend)
    record = metrics.operation_duration.record
    count_slow = metrics.slow_queries.add

    def report(statement: str, elapsed: float, params: Any, many: bool) -> None:
        log.warning(
            "slow query",
            sql=redact_sql(statement),
            elapsed_ms=round(elapsed * 1000, 3),
            threshold_ms=round(slow.seconds * 1000, 3),
            params=_param_summary(params, many),
        )

    def timed(run: Callable[..., None], *, many: bool) -> Callable[..., bool]:
        # ``rest`` is (parameters, context) for do_execute/do_executemany, (context,) otherwise
        def listener(cursor: Any, statement: str, *rest: Any) -> bool:
            started = perf_counter()
            try:
                run(cursor, statement, *rest)
            except BaseException as exc:
                record(perf_counter() - started, attributes.failed(statement, exc))
                raise
            elapsed = perf_counter() - started
            attrs = attributes(statement)
            record(elapsed, attrs)
            if elapsed >= slow.seconds:
                count_slow(1, attrs)
                report(statement, elapsed, rest[0] if len(rest) == 2 else None, many)
            return True

        return listener

    event.listen(engine, "do_execute", timed(dialect.do_execute, many=False))
    event.listen(engine, "do_execute_no_params", timed(dialect.do_execute_no_params, many=False))
    event.listen(engine, "do_executemany", timed(dialect.do_executemany, many=True))
