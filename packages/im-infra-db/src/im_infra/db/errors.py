"""Exceptions raised by :mod:`im_infra.db`.

Every failure that crosses the package boundary is a :class:`DBError`. Backend exceptions
(SQLAlchemy, PyMySQL, psycopg, sqlite3) are translated where they leave a provider method or one
of its context managers and kept as ``__cause__``. Messages name the server (``backend host:port``)
and the problem; they never contain the password.
"""

from __future__ import annotations

from im_infra.coord import errors as _coord_errors

__all__ = [
    "AuthenticationError",
    "CommitOutcomeUnknownError",
    "ConfigError",
    "ConnectionLostError",
    "DBConnectionError",
    "DBError",
    "DriverNotInstalledError",
    "IntegrityError",
    "InvalidURLError",
    "NotFoundError",
    "OutboxError",
    "PoolTimeoutError",
    "ProviderClosedError",
    "QueryError",
    "ServerUnreachableError",
    "StatementTimeoutError",
    "TLSCertificateError",
    "TLSError",
    "TransactionConflictError",
    "TransactionError",
    "UnknownDatabaseError",
]


class DBError(Exception):
    """Base class of every im_infra.db error.

    ``server`` is ``"<backend> <host>:<port>"`` (or ``"sqlite <path>"``) when known.
    """

    def __init__(self, message: str, *, server: str | None = None) -> None:
        super().__init__(message)
        self.server = server


class ConfigError(DBError, _coord_errors.ConfigError):
    """The db configuration is invalid (document, field and problem are named).

    Also a :class:`im_infra.coord.ConfigError`, so one ``except`` covers every component.
    """


class InvalidURLError(ConfigError):
    """The DSN / URL cannot be parsed or names a driver that is not installed."""


class DriverNotInstalledError(InvalidURLError):
    """The database driver for the configured backend is not installed.

    im-infra-db installs no driver by itself; ``extra`` names the extra that brings it
    (``pip install 'im-infra-db[postgresql]'``, ``[mysql]`` or ``[sqlite]``).
    """

    def __init__(self, message: str, *, extra: str, server: str | None = None) -> None:
        super().__init__(message, server=server)
        self.extra = extra


class ProviderClosedError(DBError):
    """The provider was used after ``close()``."""


class DBConnectionError(DBError):
    """A connection to the database server could not be made or was lost."""


class ServerUnreachableError(DBConnectionError):
    """The server does not answer: refused, unknown host, timeout."""


class AuthenticationError(DBConnectionError):
    """The server rejected the credentials (or the user's access to the database)."""


class UnknownDatabaseError(DBConnectionError):
    """The server answers but the named database does not exist (or the file cannot be opened)."""


class TLSError(DBConnectionError):
    """TLS was required but could not be established (server without TLS, bad certificate)."""


class TLSCertificateError(TLSError):
    """A certificate was not accepted: the server's is not signed by ``tls.caFile`` or does not
    name the host connected to, or the client certificate was refused or is missing."""


class ConnectionLostError(DBConnectionError):
    """An established connection broke (server restart, KILL, pg_terminate_backend).

    The pool discards the connection; the next use gets a fresh one. The statement that was
    running is not retried: a transaction in progress before its COMMIT is lost (rolled back by
    the server). A connection lost during the COMMIT itself is :class:`CommitOutcomeUnknownError`.
    """


class CommitOutcomeUnknownError(ConnectionLostError):
    """The connection broke (or timed out) while COMMIT was in flight: the server may have
    committed the transaction or not, and the client cannot tell. Do not assume either: check
    (read back a row the transaction wrote, or an idempotency key stored in it) before running
    the transaction again. See docs/db.md, "Commit outcome unknown"."""


class PoolTimeoutError(DBError, TimeoutError):
    """No pooled connection became free within ``poolTimeout`` (also the builtin
    ``TimeoutError``)."""


class QueryError(DBError):
    """A statement failed on the server."""


class IntegrityError(QueryError):
    """A constraint was violated (duplicate key, foreign key, NOT NULL, CHECK)."""


class NotFoundError(QueryError):
    """A query that must return a row returned none (``Result.scalar_one()``, ``get_one()``)."""


class StatementTimeoutError(QueryError, TimeoutError):
    """The statement ran longer than ``statementTimeout`` and the server cancelled it (also the
    builtin ``TimeoutError``)."""


class TransactionConflictError(QueryError):
    """Deadlock, lock-wait timeout or serialization failure: the transaction may be retried."""


class OutboxError(DBError):
    """The transactional outbox was misused (bad event, no transaction) or could not publish."""


class TransactionError(DBError):
    """A transaction was misused, e.g. ``commit()`` after it already finished."""
