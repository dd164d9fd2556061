"""Driver exceptions → DBError subclasses (classification, messages, no password)."""

from __future__ import annotations

import ssl

import psycopg
import pymysql  # type: ignore[import-untyped]
import pytest
from sqlalchemy import exc as sa_exc

from im_infra import db
from im_infra.db._internal.target import Target
from im_infra.db._internal.translate import raise_translated, translate

SECRET = "Zq-translate-secret-5"
MYSQL = Target("mysql", "10.0.0.5", 3306, "im", "app", (SECRET,))
PG = Target("postgresql", "10.0.0.6", 5432, "im", "app", (SECRET,))


def _wrap(orig: Exception, statement: str | None = "SELECT 1") -> sa_exc.DBAPIError:
    cls = sa_exc.IntegrityError if "Integrity" in type(orig).__name__ else sa_exc.OperationalError
    return cls(statement, None, orig)


@pytest.mark.parametrize(
    ("code", "message", "statement", "expected"),
    [
        (
            1045,
            "Access denied for user 'app'@'x' (using password: YES)",
            None,
            db.AuthenticationError,
        ),
        (1049, "Unknown database 'im'", None, db.UnknownDatabaseError),
        (
            2003,
            "Can't connect to MySQL server on '10.0.0.5' (111)",
            None,
            db.ServerUnreachableError,
        ),
        (2013, "Lost connection to MySQL server during query", "SELECT 1", db.ConnectionLostError),
        (1927, "Connection was killed", "SELECT 1", db.ConnectionLostError),
        (
            1969,
            "Query execution was interrupted (max_statement_time exceeded)",
            "SELECT 1",
            db.StatementTimeoutError,
        ),
        (1213, "Deadlock found when trying to get lock", "UPDATE t", db.TransactionConflictError),
        (1146, "Table 'im.nope' doesn't exist", "SELECT * FROM nope", db.QueryError),
        (2026, "SSL is required but the server doesn't support it", None, db.TLSError),
    ],
)
def test_mysql_classification(
    code: int, message: str, statement: str | None, expected: type[db.DBError]
) -> None:
    error = translate(_wrap(pymysql.err.OperationalError(code, message), statement), MYSQL)
    assert type(error) is expected
    assert "mysql 10.0.0.5:3306" in str(error)
    assert error.server == "mysql 10.0.0.5:3306"


def test_mysql_integrity_error() -> None:
    orig = pymysql.err.IntegrityError(1062, "Duplicate entry '1' for key 'PRIMARY'")
    error = translate(_wrap(orig, "INSERT INTO t VALUES (1)"), MYSQL)
    assert type(error) is db.IntegrityError


@pytest.mark.parametrize(
    ("sqlstate", "expected"),
    [
        ("57014", db.StatementTimeoutError),
        ("40P01", db.TransactionConflictError),
        ("40001", db.TransactionConflictError),
        ("57P01", db.ConnectionLostError),
        ("23505", db.IntegrityError),
        ("42P01", db.QueryError),
    ],
)
def test_postgresql_sqlstates(sqlstate: str, expected: type[db.DBError]) -> None:
    orig = psycopg.errors.lookup(sqlstate)("boom")
    cls = sa_exc.IntegrityError if sqlstate.startswith("23") else sa_exc.OperationalError
    error = translate(cls("SELECT 1", None, orig), PG)
    assert type(error) is expected


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (
            'connection failed: connection to server at "10.0.0.6", port 5432 failed: '
            'FATAL:  password authentication failed for user "app"',
            db.AuthenticationError,
        ),
        (
            'connection failed: connection to server at "10.0.0.6", port 5432 failed: '
            'FATAL:  role "app" does not exist',
            db.AuthenticationError,
        ),
        (
            'connection failed: connection to server at "10.0.0.6", port 5432 failed: '
            'FATAL:  database "im" does not exist',
            db.UnknownDatabaseError,
        ),
        (
            'connection failed: connection to server at "10.0.0.6", port 5432 failed: '
            "Connection refused\n\tIs the server running on that host?",
            db.ServerUnreachableError,
        ),
        ("connection failed: timeout expired", db.ServerUnreachableError),
        ("server does not support SSL, but SSL was required", db.TLSError),
    ],
)
def test_postgresql_connect_messages(message: str, expected: type[db.DBError]) -> None:
    error = translate(_wrap(psycopg.OperationalError(message), None), PG)
    assert type(error) is expected
    assert "postgresql 10.0.0.6:5432" in str(error)
    assert "\n" not in str(error)


def test_password_in_driver_message_is_scrubbed_and_not_chained() -> None:
    exc = _wrap(psycopg.OperationalError(f"invalid password {SECRET} for app"), None)
    with pytest.raises(db.DBError) as info:
        raise_translated(exc, PG)
    assert SECRET not in str(info.value)
    assert info.value.__cause__ is None


def test_chained_when_safe() -> None:
    exc = _wrap(pymysql.err.OperationalError(1049, "Unknown database 'im'"), None)
    with pytest.raises(db.UnknownDatabaseError) as info:
        raise_translated(exc, MYSQL)
    assert info.value.__cause__ is exc


def test_non_dbapi_errors() -> None:
    assert type(translate(sa_exc.TimeoutError("pool"), MYSQL)) is db.PoolTimeoutError
    assert type(translate(sa_exc.NoResultFound("none"), MYSQL)) is db.NotFoundError
    already = db.QueryError("x")
    assert translate(already, MYSQL) is already
    assert type(translate(sa_exc.InvalidRequestError("odd"), MYSQL)) is db.DBError


def test_sqlite_missing_file_is_unknown_database() -> None:
    import sqlite3

    target = Target("sqlite", None, None, "/no/such/dir/x.db", None)
    error = translate(_wrap(sqlite3.OperationalError("unable to open database file"), None), target)
    assert type(error) is db.UnknownDatabaseError
    assert "sqlite /no/such/dir/x.db" in str(error)


@pytest.mark.parametrize(
    ("orig", "target"),
    [
        (
            psycopg.OperationalError(
                'connection failed: connection to server at "::1", port 5432 failed: Connection '
                'refused\nconnection to server at "10.0.0.6", port 5432 failed: server certificate'
                ' for "10.0.0.6" does not match host name "db"'
            ),
            PG,
        ),
        (
            pymysql.err.OperationalError(
                2003,
                "Can't connect to MySQL server on 'db' ([SSL: CERTIFICATE_VERIFY_FAILED] "
                "certificate verify failed: Hostname mismatch (_ssl.c:1006))",
            ),
            MYSQL,
        ),
    ],
)
def test_certificate_problems(orig: Exception, target: Target) -> None:
    """Any line about a certificate wins over the first line (libpq: one per address tried)."""
    error = translate(_wrap(orig, None), target)
    assert type(error) is db.TLSCertificateError
    assert "TLS certificate problem" in str(error)
    assert "does not match" in str(error) or "Hostname mismatch" in str(error)


def test_certificate_error_found_in_the_cause() -> None:
    """aiomysql keeps the ssl error only as the cause of a generic 2003."""
    orig = pymysql.err.OperationalError(2003, "Can't connect to MySQL server on 'db'")
    cause = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] ...")
    cause.verify_message = "self-signed certificate in certificate chain"
    orig.__cause__ = cause
    error = translate(_wrap(orig, None), MYSQL)
    assert type(error) is db.TLSCertificateError
    assert "self-signed certificate" in str(error)
    plain = pymysql.err.OperationalError(2003, "Can't connect to MySQL server on 'db' (111)")
    assert type(translate(_wrap(plain, None), MYSQL)) is db.ServerUnreachableError
