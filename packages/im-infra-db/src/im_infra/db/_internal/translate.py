"""Backend exceptions → DBError subclasses, at the package boundary."""

from __future__ import annotations

import ssl
from typing import NoReturn

from sqlalchemy import exc as sa_exc

from im_infra.db._internal.commit import at_commit
from im_infra.db._internal.sqltext import redact_sql
from im_infra.db._internal.target import Target
from im_infra.db.errors import (
    AuthenticationError,
    CommitOutcomeUnknownError,
    ConnectionLostError,
    DBConnectionError,
    DBError,
    IntegrityError,
    InvalidURLError,
    NotFoundError,
    PoolTimeoutError,
    QueryError,
    ServerUnreachableError,
    StatementTimeoutError,
    TLSCertificateError,
    TLSError,
    TransactionConflictError,
    UnknownDatabaseError,
)

_MYSQL_AUTH = frozenset({1044, 1045, 1698, 1251})
_MYSQL_UNKNOWN_DB = frozenset({1049})
_MYSQL_TIMEOUT = frozenset({1969, 3024})
_MYSQL_CONFLICT = frozenset({1205, 1213})
_MYSQL_UNREACHABLE = frozenset({2002, 2003, 2005})
_MYSQL_LOST = frozenset({1053, 1927, 2006, 2013, 2055, 4031})
_PG_AUTH = frozenset({"28P01", "28000"})
_PG_TIMEOUT = frozenset({"57014"})
_PG_CONFLICT = frozenset({"40001", "40P01", "55P03"})
_AUTH_TEXT = ("authentication failed", "no pg_hba.conf entry", "access denied for user")
_MYSQL_TLS = frozenset({2026})
_TLS_TEXT = ("ssl", "certificate", "tls")
_UNREACHABLE_TEXT = (
    "connection refused",
    "could not connect",
    "can't connect",
    "timeout expired",
    "timed out",
    "could not translate host name",
    "name or service not known",
    "no route to host",
    "network is unreachable",
    "temporary failure in name resolution",
)


def _mysql_code(orig: BaseException | None) -> int | None:
    if orig is None or not orig.args:
        return None
    code = orig.args[0]
    return code if isinstance(code, int) else None


def _reason(orig: BaseException | None, target: Target) -> str:
    """The driver's message, one line, without the password."""
    if orig is None:
        return ""
    args = orig.args
    is_mysql = len(args) >= 2 and isinstance(args[0], int)  # PyMySQL: (code, message)
    text = f"({args[0]}) {args[1]}" if is_mysql else str(orig)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    text = lines[0] if lines else type(orig).__name__
    # psycopg: 'connection failed: connection to server at "h", port p failed: FATAL:  reason'
    if text.startswith("connection failed:") and " failed: " in text:
        text = text.rsplit(" failed: ", 1)[1].strip() or text
    text = text.removeprefix("FATAL:").strip()
    return target.scrub(text)


def _certificate_problem(orig: BaseException | None, target: Target) -> str | None:
    """The line saying what is wrong with a certificate, when connecting failed because of one.

    Looks through the whole message (libpq writes one line per address tried) and the driver
    exception's causes (aiomysql keeps the ``ssl`` error only as the cause).
    """
    seen = 0
    while orig is not None and seen < 5:
        if isinstance(orig, ssl.SSLCertVerificationError):
            return target.scrub(orig.verify_message or str(orig))
        for line in str(orig).splitlines():
            if "certificate" in line.lower():
                return target.scrub(line.strip())
        orig = orig.__cause__ or orig.__context__
        seen += 1
    return None


def _classify_dbapi(exc: sa_exc.DBAPIError, target: Target) -> DBError:
    orig = exc.orig if isinstance(exc.orig, BaseException) else None
    code = _mysql_code(orig)
    sqlstate = getattr(orig, "sqlstate", None)
    reason = _reason(orig, target)
    lower = reason.lower()
    server = target.server
    committing = exc.statement is None and at_commit(exc)
    connecting = exc.statement is None and not committing

    if (
        code in _MYSQL_AUTH
        or sqlstate in _PG_AUTH
        or any(text in lower for text in _AUTH_TEXT)
        or (lower.startswith("role ") and "does not exist" in lower)
    ):
        return AuthenticationError(
            f"{server}: authentication failed for user {target.user or ''!r}: {reason}",
            server=server,
        )
    if (
        code in _MYSQL_UNKNOWN_DB
        or sqlstate == "3D000"
        or ("database" in lower and "does not exist" in lower)
        or (target.backend == "sqlite" and "unable to open database file" in lower)
    ):
        return UnknownDatabaseError(
            f"{server}: database {target.database or ''!r} does not exist or cannot be "
            f"opened: {reason}",
            server=server,
        )
    if code in _MYSQL_TIMEOUT or sqlstate in _PG_TIMEOUT:
        return StatementTimeoutError(
            f"{server}: statement cancelled by the server's statement timeout: {reason} "
            f"[SQL: {redact_sql(exc.statement, 500)}]",
            server=server,
        )
    if code in _MYSQL_CONFLICT or sqlstate in _PG_CONFLICT:
        return TransactionConflictError(
            f"{server}: transaction conflict (retry the transaction): {reason}", server=server
        )
    problem = _certificate_problem(orig, target) if connecting else None
    if problem is not None:
        return TLSCertificateError(
            f"{server}: TLS certificate problem: {problem} (check tls.caFile, tls.certFile/"
            "keyFile and that the host name is one the server certificate names)",
            server=server,
        )
    if connecting and (code in _MYSQL_TLS or any(text in lower for text in _TLS_TEXT)):
        return TLSError(f"{server}: TLS connection failed: {reason}", server=server)
    if connecting and (
        code in _MYSQL_UNREACHABLE or any(text in lower for text in _UNREACHABLE_TEXT)
    ):
        return ServerUnreachableError(f"cannot reach {server}: {reason}", server=server)
    lost = (
        exc.connection_invalidated
        or code in _MYSQL_LOST
        or (
            isinstance(sqlstate, str)
            and (sqlstate.startswith("08") or sqlstate in ("57P01", "57P02", "57P03"))
        )
    )
    if committing and (lost or any(text in lower for text in _UNREACHABLE_TEXT)):
        return CommitOutcomeUnknownError(
            f"{server}: connection lost during COMMIT: the transaction may or may not have been"
            f" committed (check before running it again): {reason}",
            server=server,
        )
    if lost:
        return ConnectionLostError(
            f"{server}: connection lost (the pool will reconnect on next use): {reason}",
            server=server,
        )
    if isinstance(exc, sa_exc.IntegrityError):
        return IntegrityError(f"{server}: constraint violated: {reason}", server=server)
    if connecting:
        return DBConnectionError(f"cannot connect to {server}: {reason}", server=server)
    return QueryError(
        f"{server}: query failed: {reason} [SQL: {redact_sql(exc.statement, 500)}]",
        server=server,
    )


def translate(exc: BaseException, target: Target) -> DBError:
    """The DBError for ``exc`` (``exc`` itself when it already is one)."""
    if isinstance(exc, DBError):
        return exc
    server = target.server
    if isinstance(exc, sa_exc.DBAPIError):
        return _classify_dbapi(exc, target)
    if isinstance(exc, sa_exc.TimeoutError):
        return PoolTimeoutError(
            f"{server}: no pooled connection became free in time (raise poolSize/maxOverflow "
            "or poolTimeout)",
            server=server,
        )
    if isinstance(exc, sa_exc.NoSuchModuleError | sa_exc.ArgumentError):
        return InvalidURLError(f"{server}: {target.scrub(str(exc))}", server=server)
    if isinstance(exc, sa_exc.NoResultFound):
        return NotFoundError(f"{server}: no row found", server=server)
    first_line = target.scrub(str(exc).strip().split("\n", 1)[0])
    if isinstance(exc, sa_exc.StatementError):  # failed before reaching the server
        return QueryError(
            f"{server}: statement not executed: {first_line} "
            f"[SQL: {redact_sql(exc.statement, 500)}]",
            server=server,
        )
    return DBError(f"{server}: {type(exc).__name__}: {first_line}", server=server)


def raise_translated(exc: BaseException, target: Target, error: DBError | None = None) -> NoReturn:
    """Raise ``error`` (default: the DBError for ``exc``), chained to ``exc`` unless the text of
    ``exc`` would leak the password."""
    if error is None:
        error = translate(exc, target)
    if error is exc:
        raise exc
    if target.leaks(str(exc)):
        raise error from None
    raise error from exc
