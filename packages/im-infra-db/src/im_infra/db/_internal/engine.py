"""From a DBConfig to SQLAlchemy engine arguments: URL, driver choice, connect args, pool."""

from __future__ import annotations

import math
import ssl
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError

from im_infra.db._internal.target import Target
from im_infra.db.config import DBConfig, TLSConfig
from im_infra.db.errors import InvalidURLError, TLSError

_SYNC_DRIVERS = {
    "mysql": "pymysql",
    "mariadb": "pymysql",
    "postgresql": "psycopg",
    "sqlite": "pysqlite",
}
_ASYNC_DRIVERS = {
    "mysql": "aiomysql",
    "mariadb": "aiomysql",
    "postgresql": "psycopg",
    "sqlite": "aiosqlite",
}
_SYNC_ONLY = frozenset(
    {"pymysql", "mysqldb", "mysqlconnector", "mariadbconnector", "pysqlite", "psycopg2", "pg8000"}
)
_DEFAULT_PORTS = {"mysql": 3306, "mariadb": 3306, "postgresql": 5432}


@dataclass(frozen=True)
class EngineSpec:
    """Everything needed to create (and set up) an engine for one config."""

    url: URL
    kwargs: dict[str, Any]
    target: Target
    statement_timeout: float
    tls_required: bool = False


def _url_from_config(config: DBConfig, *, is_async: bool) -> URL:
    if config.dsn is not None:
        raw = config.dsn.get_secret_value()
        try:
            url = make_url(raw)
        except (ArgumentError, ValueError) as exc:
            # The parser's message repeats the raw string, password included: do not chain it.
            raise InvalidURLError(
                f"db dsn is not a valid SQLAlchemy URL ({type(exc).__name__}); expected "
                "dialect+driver://user:password@host:port/database"
            ) from None
        backend = url.get_backend_name()
        if backend not in _SYNC_DRIVERS:
            raise InvalidURLError(
                f"db dsn names unsupported database {backend!r}; supported: "
                + ", ".join(sorted(_SYNC_DRIVERS))
            )
        if url.password is None and config.password.get_secret_value():
            # a DSN without password + IM_INFRA_DB_PASSWORD / the password field
            url = url.set(password=config.password.get_secret_value())
        explicit = url.drivername.partition("+")[2]
        if is_async and (not explicit or explicit in _SYNC_ONLY):
            url = url.set(drivername=f"{backend}+{_ASYNC_DRIVERS[backend]}")
        elif not explicit:
            url = url.set(drivername=f"{backend}+{_SYNC_DRIVERS[backend]}")
        return url
    backend = config.driver
    driver = (_ASYNC_DRIVERS if is_async else _SYNC_DRIVERS)[backend]
    if backend == "sqlite":
        return URL.create(
            f"sqlite+{driver}",
            database=config.database or None,
            query=dict(config.params),
        )
    return URL.create(
        f"{backend}+{driver}",
        username=config.user or None,
        password=config.password.get_secret_value() or None,
        host=config.host,
        port=config.port or _DEFAULT_PORTS[backend],
        database=config.database or None,
        query=dict(config.params),
    )


def _ssl_context(tls: TLSConfig) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=tls.ca_file)
    if tls.cert_file:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    if not tls.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _connect_args(backend: str, config: DBConfig, url: URL) -> dict[str, Any]:
    args: dict[str, Any] = {}
    if backend == "sqlite":
        args["timeout"] = config.connect_timeout
        return args
    if backend == "postgresql":
        if config.connect_timeout > 0:
            # libpq takes whole seconds and treats anything below 2 as 2.
            args["connect_timeout"] = max(2, math.ceil(config.connect_timeout))
        if config.statement_timeout > 0:
            millis = max(1, round(config.statement_timeout * 1000))
            options = str(url.query.get("options", ""))
            args["options"] = f"{options} -c statement_timeout={millis}".strip()
        if config.tls.enabled:
            args["sslmode"] = "verify-full" if config.tls.verify else "require"
            if config.tls.ca_file:
                args["sslrootcert"] = config.tls.ca_file
            if config.tls.cert_file:
                args["sslcert"] = config.tls.cert_file
            if config.tls.key_file:
                args["sslkey"] = config.tls.key_file
        return args
    # MySQL / MariaDB (PyMySQL and aiomysql share these arguments)
    if config.connect_timeout > 0:
        args["connect_timeout"] = config.connect_timeout
    if config.tls.enabled:
        args["ssl"] = _ssl_context(config.tls)
    return args


def _is_memory_sqlite(url: URL) -> bool:
    database = url.database or ""
    return database in ("", ":memory:") or url.query.get("mode") == "memory"


def build_spec(config: DBConfig, *, is_async: bool) -> EngineSpec:
    """Resolve the URL and create_engine() keyword arguments for ``config``."""
    url = _url_from_config(config, is_async=is_async)
    backend = url.get_backend_name()
    kwargs: dict[str, Any] = {
        "hide_parameters": True,  # bound values never reach exception messages or logs
        "pool_pre_ping": config.pool_pre_ping,
        "pool_recycle": config.pool_recycle if config.pool_recycle > 0 else -1,
        "connect_args": _connect_args(backend, config, url),
    }
    if not (backend == "sqlite" and _is_memory_sqlite(url)):
        kwargs["pool_size"] = config.pool_size
        kwargs["max_overflow"] = config.max_overflow
        kwargs["pool_timeout"] = config.pool_timeout
    password = url.password
    secrets = (str(password),) if password else ()
    target = Target(
        backend=backend,
        host=url.host,
        port=url.port or _DEFAULT_PORTS.get(backend),
        database=url.database,
        user=url.username,
        secrets=secrets,
    )
    return EngineSpec(
        url=url,
        kwargs=kwargs,
        target=target,
        statement_timeout=config.statement_timeout,
        tls_required=config.tls.enabled,
    )


def _sqlite_transactions(engine: Engine) -> None:
    """Let SQLAlchemy own BEGIN, so SAVEPOINT and transactional DDL work on SQLite.

    The sqlite3 module's legacy transaction handling defers BEGIN to the first DML statement,
    which breaks savepoints; this is the recipe from the SQLAlchemy SQLite dialect docs.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # Straight on the DBAPI cursor: the statement needs none of SQLAlchemy's execution
        # machinery, and this runs once per transaction.
        cursor = connection.connection.cursor()
        try:
            cursor.execute("BEGIN")
        finally:
            cursor.close()


def _mysql_statement_timeout(engine: Engine, seconds: float) -> None:
    """Set the per-session statement limit on every new MySQL/MariaDB connection.

    MariaDB calls it ``max_statement_time`` (seconds, every statement), MySQL
    ``max_execution_time`` (milliseconds, SELECT only). The first connection finds out which one
    the server knows; later connections use that one directly.
    """
    candidates = (
        f"SET SESSION max_statement_time={seconds:.3f}",
        f"SET SESSION max_execution_time={max(1, round(seconds * 1000))}",
    )
    known: list[str] = []  # the statement this server accepted (idempotent to fill)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            if known:
                cursor.execute(known[0])
                return
            for statement in candidates[:-1]:
                try:
                    cursor.execute(statement)
                except Exception:  # noqa: S112 - unknown variable here: try the next spelling
                    continue
                known[:] = [statement]
                return
            cursor.execute(candidates[-1])
            known[:] = [candidates[-1]]
        finally:
            cursor.close()


def _mysql_require_tls(engine: Engine, target: Target) -> None:
    """Refuse a MySQL/MariaDB connection that is not encrypted although TLS was required.

    PyMySQL refuses by itself, but aiomysql silently stays in plaintext when the server does
    not offer TLS; the server's own ``Ssl_cipher`` status tells for both.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
            row = cursor.fetchone()
        finally:
            cursor.close()
        if not row or not row[1]:
            dbapi_connection.close()
            raise TLSError(
                f"{target.server}: TLS is required (tls.enabled) but the server did not "
                "encrypt the connection",
                server=target.server,
            )


def configure_engine(engine: Engine, spec: EngineSpec) -> None:
    """Install the backend-specific connection hooks on a (sync) engine."""
    backend = spec.target.backend
    if backend == "sqlite":
        _sqlite_transactions(engine)
        return
    if backend in ("mysql", "mariadb"):
        if spec.tls_required:
            _mysql_require_tls(engine, spec.target)
        if spec.statement_timeout > 0:
            _mysql_statement_timeout(engine, spec.statement_timeout)
