"""Whether a failure happened while a COMMIT was in flight: marked by engine events, not guessed.

A DBAPIError without a statement comes from connecting, or from COMMIT / ROLLBACK; only one
raised while COMMIT was on the wire leaves the transaction's outcome unknown
(``CommitOutcomeUnknownError``). SQLAlchemy announces the COMMIT it is about to send (the
``commit`` connection event, right before ``dialect.do_commit``) and hands every DBAPI failure
to ``handle_error`` before raising it; :func:`install` listens to both on the provider's engine
(the sync engine of an AsyncEngine too: one mechanism for both flavours) and marks the error
that ends an announced COMMIT. ``begin`` clears a COMMIT that succeeded, so a later failure of
the same connection is not taken for one. Nothing runs per statement.

Unmarked is the safe side of an unknown future SQLAlchemy change only in that such an error
becomes a plain connection error; the ``commit`` event is public API (``ConnectionEvents``).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, ExceptionContext

_IN_FLIGHT = "_im_infra_db_commit_in_flight"
_MARK = "_im_infra_db_at_commit"


def install(engine: Engine) -> None:
    """Listen on ``engine`` (a sync Engine or an AsyncEngine's ``sync_engine``)."""
    event.listen(engine, "commit", _on_commit)
    event.listen(engine, "begin", _on_begin)
    event.listen(engine, "handle_error", _on_error)


def at_commit(exc: BaseException) -> bool:
    """True when ``exc`` was raised while a COMMIT was in flight."""
    return getattr(exc, _MARK, False) is True


def _on_commit(connection: Connection) -> None:
    connection.__dict__[_IN_FLIGHT] = True


def _on_begin(connection: Connection) -> None:
    connection.__dict__.pop(_IN_FLIGHT, None)


def _on_error(ctx: ExceptionContext) -> None:
    connection: Any = ctx.connection
    if connection is None or not connection.__dict__.pop(_IN_FLIGHT, False):
        return
    if ctx.statement is None and ctx.sqlalchemy_exception is not None:
        setattr(ctx.sqlalchemy_exception, _MARK, True)
