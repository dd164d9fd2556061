"""Whether a failure happened while a COMMIT was in flight: marked where COMMIT is sent, not
guessed from the traceback.

A DBAPIError without a statement comes from connecting, or from COMMIT / ROLLBACK; only one
raised while COMMIT was on the wire leaves the transaction's outcome unknown
(``CommitOutcomeUnknownError``). Every COMMIT SQLAlchemy sends goes through its dialect's
``do_commit(dbapi_connection)``; :func:`install` wraps that method on the provider engine's own
dialect instance (the sync engine of an AsyncEngine too: one mechanism for both flavours) so
that the driver exception it raises is marked, and :func:`at_commit` reads the mark from the
``DBAPIError`` SQLAlchemy raises for it (its ``orig``). This covers ``tx.commit()``, the end of
a ``transaction()`` block and a ``session.commit()`` the caller sends itself. Nothing runs per
statement, and no connection event is added (those would turn on SQLAlchemy's per-connection
event dispatch on every statement).
"""

from __future__ import annotations

import contextlib
from typing import Any

from sqlalchemy.engine import Engine

_MARK = "_im_infra_db_at_commit"


def install(engine: Engine) -> None:
    """Mark the failures of ``engine``'s COMMITs (a sync Engine or an AsyncEngine's
    ``sync_engine``; its dialect instance belongs to it alone)."""
    dialect = engine.dialect
    do_commit = dialect.do_commit

    def marked_do_commit(dbapi_connection: Any) -> None:
        try:
            do_commit(dbapi_connection)
        except BaseException as exc:
            _mark(exc)
            raise

    dialect.do_commit = marked_do_commit  # type: ignore[method-assign]


def _mark(exc: BaseException) -> None:
    with contextlib.suppress(AttributeError):  # (no __dict__: a plain connection error)
        setattr(exc, _MARK, True)


def at_commit(exc: BaseException) -> bool:
    """True when ``exc`` (a DBAPIError, or the driver's exception) was raised by a COMMIT."""
    orig = getattr(exc, "orig", None)
    return getattr(orig, _MARK, False) is True or getattr(exc, _MARK, False) is True
