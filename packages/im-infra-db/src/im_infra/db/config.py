"""The ``db.yaml`` configuration model.

One document per service, resolved by coord like every component (docs/configuration.md): the
global ``db.yaml``, the service's own, the environment (``IM_INFRA_DB_<FIELD>``, e.g.
``IM_INFRA_DB_PASSWORD``), then keyword overrides. Keys are camelCase in YAML;
snake_case works too (``populate_by_name``). Durations accept seconds (``1.5``) or Go strings
(``200ms``, ``5s``, ``1h``). See ``docs/db.md`` for the full reference.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    BeforeValidator,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from im_infra.coord import Component, Duration
from im_infra.db._internal.model import Model as _Model
from im_infra.db._internal.model import Secret
from im_infra.db._internal.model import as_text as _as_text
from im_infra.db.errors import ConfigError
from im_infra.db.replica_config import ReplicaEndpoint, ReplicasConfig

__all__ = [
    "DB",
    "DBConfig",
    "Driver",
    "Duration",
    "ReplicaEndpoint",
    "ReplicasConfig",
    "TLSConfig",
]

Driver = Literal["mysql", "mariadb", "postgresql", "sqlite"]
"""Database family. ``mariadb`` uses SQLAlchemy's MariaDB dialect; ``mysql`` works for both."""


_DRIVER_ALIASES = {"postgres": "postgresql", "pg": "postgresql", "sqlite3": "sqlite"}


class TLSConfig(_Model):
    """TLS to the database server (MySQL/MariaDB and PostgreSQL; ignored for SQLite)."""

    enabled: bool = False
    """Require TLS. PostgreSQL: ``sslmode=verify-full`` with ``verify``, else ``require``."""
    ca_file: str | None = None
    """PEM bundle of the CA that signed the server certificate (default: the system store)."""
    cert_file: str | None = None
    """Client certificate (PEM) for mutual TLS."""
    key_file: str | None = None
    """Private key (PEM) of ``cert_file``."""
    verify: bool = True
    """Verify the server certificate and host name."""

    @model_validator(mode="after")
    def _check_pair(self) -> TLSConfig:
        if self.key_file and not self.cert_file:
            raise ValueError("keyFile is set but certFile is not")
        return self


class DBConfig(_Model):
    """Connection, pool and logging settings of one database."""

    driver: Driver = "mysql"
    """Database family; picks the Python driver (PyMySQL/aiomysql, psycopg 3, sqlite3/aiosqlite)."""
    dsn: Secret | None = None
    """A full SQLAlchemy URL (``postgresql+psycopg://u:p@h:5432/db``). When set it replaces
    driver/host/port/user/database/params (``password`` only fills in a DSN without one); the
    driver part is adapted for async use."""
    host: str = Field(default="127.0.0.1", validate_default=True)
    port: int | None = Field(default=None, ge=1, le=65535)
    """Default: 3306 (MySQL/MariaDB), 5432 (PostgreSQL)."""
    user: str = ""
    password: Secret = SecretStr("")
    """Prefer the ``IM_INFRA_DB_PASSWORD`` environment variable to a value in the config center."""
    database: str = ""
    """Database name; for SQLite the file path (empty or ``:memory:`` = in-memory)."""
    params: dict[str, Annotated[str, BeforeValidator(_as_text)]] = Field(default_factory=dict)
    """Extra URL query parameters passed to the driver, e.g. ``{charset: utf8mb4}``."""

    pool_size: int = Field(default=10, ge=1)
    """Connections kept open in the pool (Go: maxIdleConns)."""
    max_overflow: int = Field(default=20, ge=0)
    """Extra connections allowed under load (pool_size + max_overflow = Go's maxOpenConns)."""
    pool_recycle: Duration = 3600.0
    """Replace connections older than this (Go: connMaxLifetime); 0 disables."""
    pool_pre_ping: bool = True
    """Test a pooled connection before use and replace it if the server dropped it."""
    pool_timeout: Duration = 30.0
    """How long a caller waits for a free pooled connection before PoolTimeoutError."""

    connect_timeout: Duration = 5.0
    """TCP connect + handshake limit (SQLite: how long to wait on a locked database file)."""
    statement_timeout: Duration = 0.0
    """Server-side limit per statement (PostgreSQL statement_timeout, MariaDB
    max_statement_time, MySQL max_execution_time for SELECT); 0 disables. Not on SQLite."""
    tls: TLSConfig = Field(default_factory=TLSConfig)

    slow_threshold: Duration = 0.2
    """Statements slower than this are logged as warnings with the SQL and counted in
    ``im_infra.db.slow_queries`` (Go default 200ms); 0 disables the slow-query check (statements
    are still timed for ``db.client.operation.duration``)."""
    expire_on_commit: bool = False
    """SQLAlchemy Session option: expire loaded objects on commit (off: objects stay usable)."""
    replicas: ReplicasConfig = Field(default_factory=ReplicasConfig)
    """Read replicas: where ``session()`` reads go (see :class:`ReplicasConfig`)."""

    @model_validator(mode="before")
    @classmethod
    def _normalise_driver(cls, data: object) -> object:
        if isinstance(data, dict) and isinstance(data.get("driver"), str):
            driver = data["driver"].strip().lower()
            return {**data, "driver": _DRIVER_ALIASES.get(driver, driver)}
        return data

    @field_validator("host")
    @classmethod
    def _host_required(cls, host: str, info: ValidationInfo) -> str:
        # A field validator (not a model one): its error shows only this field's value, never
        # the whole document with the password in it.
        data = info.data
        if not host and data.get("dsn") is None and data.get("driver", "mysql") != "sqlite":
            raise ValueError("host is required unless driver is sqlite or dsn is set")
        return host


DB: Component[DBConfig] = Component(
    "db",
    DBConfig,
    # applied to a running provider: the slow-query threshold; everything else shapes the
    # engine and its pool and is logged as needing a restart
    live_fields=frozenset({"slow_threshold"}),
    error=ConfigError,
)
"""The ``db.yaml`` component as coord loads it (entry point ``im_infra.config: db``)."""
