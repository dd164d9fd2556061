"""State and logic shared by the blocking and the asyncio provider (the session and
transaction flows are in ``tx.py``)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Generic, NoReturn, TypeVar

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

from im_infra import clog, coord
from im_infra.db._internal import commit, metrics
from im_infra.db._internal.engine import EngineSpec, build_spec, configure_engine
from im_infra.db._internal.flow import Call, Flow
from im_infra.db._internal.instrument import SlowThreshold, install
from im_infra.db._internal.replicas import Router, replica_config
from im_infra.db._internal.sqltext import redact_sql
from im_infra.db._internal.translate import raise_translated, translate
from im_infra.db.config import DB, DBConfig
from im_infra.db.errors import (
    ConfigError,
    DriverNotInstalledError,
    InvalidURLError,
    ProviderClosedError,
)

if TYPE_CHECKING:
    from im_infra.coord import LiveConfig
    from im_infra.coord import Provider as CoordProvider

SessionT = TypeVar("SessionT", Session, AsyncSession)
E = TypeVar("E")
Owner = object

PASSWORD_ENV = "IM_INFRA_DB_PASSWORD"  # noqa: S105 - the variable name, not a password


def live_config(
    service_name: str | None, coord_provider: CoordProvider | None, overrides: Mapping[str, Any]
) -> LiveConfig[DBConfig]:
    """The service's ``db.yaml`` through coord (sources and precedence: docs/configuration.md;
    ``IM_INFRA_DB_PASSWORD`` is the environment layer's name for ``password``)."""
    live = coord.live_config(DB, service_name, coord=coord_provider, overrides=overrides or None)
    config = live.value
    if config.dsn is None and config.driver != "sqlite" and not config.database:
        live.close()
        # Without it MySQL sessions have no default schema and PostgreSQL silently picks the
        # user's name: a configuration mistake, said here rather than by a later query.
        raise ConfigError(
            f"db config for service {live.service!r}: field 'database' is empty: set it (or "
            "'dsn') in db.yaml, as IM_INFRA_DB_DATABASE or as an override; no source set it"
        )
    return live


ProviderT = TypeVar("ProviderT", bound="ProviderBase[Any, Any]")


def from_config_center(
    make: Callable[..., ProviderT],
    service_name: str | None,
    coord_provider: CoordProvider | None,
    overrides: Mapping[str, Any],
) -> ProviderT:
    """``make(config, service=...)`` from the service's ``db.yaml``, following its live fields
    until the provider closes (``new`` and ``new_async``)."""
    live = live_config(service_name, coord_provider, overrides)
    try:
        provider = make(live.value, service=live.service)
    except BaseException:
        live.close()
        raise
    provider._follow(live)
    return provider


# The extra of im-infra-db that installs each driver SQLAlchemy may be asked for.
_EXTRAS = {
    "psycopg": "postgresql",
    "pymysql": "mysql",
    "aiomysql": "mysql",
    "aiosqlite": "sqlite",
}


def missing_driver(drivername: str, exc: ImportError, server: str) -> InvalidURLError:
    """The typed error for a driver module that cannot be imported: names the extra to install
    (a driver im-infra-db has no extra for: says which module is missing)."""
    driver = drivername.partition("+")[2]
    module = exc.name or driver
    extra = _EXTRAS.get(driver)
    if extra is None:
        return InvalidURLError(
            f"{server}: driver {drivername!r} is not installed (cannot import {module!r}); "
            "install it, or use a driver of one of im-infra-db's extras: "
            + ", ".join(f"{name} ([{extra}])" for name, extra in _EXTRAS.items()),
            server=server,
        )
    return DriverNotInstalledError(
        f"{server}: the database driver {driver!r} is not installed (cannot import "
        f"{module!r}): install im-infra-db[{extra}]",
        extra=extra,
        server=server,
    )


class ProviderCore(Generic[SessionT]):
    """Config, target, logger, closed flag and the current-transaction registry.

    The registry is a context variable holding ``(session, owner)``: a ``transaction()`` entered
    while the same thread (blocking) or task (asyncio) already has one open joins it through a
    SAVEPOINT. The owner check keeps threads started with ``copy_context()`` and tasks created
    inside a transaction from sharing a session, which is not safe to share.
    """

    __slots__ = ("active", "closed", "config", "log", "service", "spec", "target")

    def __init__(self, config: DBConfig, *, service: str, is_async: bool) -> None:
        self.config = config
        self.service = service
        self.spec: EngineSpec = build_spec(config, is_async=is_async)
        self.target = self.spec.target
        self.log = clog.get_logger("db").bind(db=self.target.server)
        self.active: ContextVar[tuple[SessionT, Owner] | None] = ContextVar(
            f"im_infra.db.active.{id(self):x}", default=None
        )
        self.closed = False

    @property
    def pool_name(self) -> str:
        """``db.client.connection.pool.name``: ``"<service>@<server>"`` (server alone without
        a service name)."""
        return f"{self.service}@{self.target.server}" if self.service else self.target.server

    def check_open(self) -> None:
        if self.closed:
            raise ProviderClosedError(
                f"db provider for {self.target.server} is closed", server=self.target.server
            )

    def joinable(self, owner: Owner) -> SessionT | None:
        """The session of the transaction this owner already has open, if any."""
        self.check_open()
        active = self.active.get()
        if active is not None and owner is not None and active[1] is owner:
            return active[0]
        return None

    def make_engine(self, factory: Callable[..., E]) -> E:
        """``factory(url, **kwargs)`` with an unusable driver/argument as InvalidURLError."""
        spec = self.spec
        try:
            return factory(spec.url, **spec.kwargs)
        except ImportError as exc:
            raise missing_driver(spec.url.drivername, exc, self.target.server) from None
        except SQLAlchemyError as exc:
            reason = self.target.scrub(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            raise InvalidURLError(
                f"{self.target.server}: cannot create an engine for driver "
                f"{spec.url.drivername!r}: {reason}",
                server=self.target.server,
            ) from None

    @contextmanager
    def translating(self, *, check_open: bool = False) -> Iterator[None]:
        """Run a block whose SQLAlchemy errors leave as (logged) DBErrors; optionally refuse
        to start when the provider is closed. For calls off the per-statement hot path."""
        if check_open:
            self.check_open()
        try:
            yield
        except SQLAlchemyError as exc:
            self.raise_translated(exc)

    def raise_translated(self, exc: BaseException) -> NoReturn:
        """Raise the DBError for ``exc``, with a ``debug`` line (the SQL and the trace id) first:
        the caller receives the error and decides whether it is one, so it is not also logged
        at error level (a duplicate key the caller handles is not an incident)."""
        error = translate(exc, self.target)
        if error is not exc:
            metrics.record_error(error, self.target.backend)
            statement = getattr(exc, "statement", None)
            self.log.debug(
                "query failed" if statement else "database error",
                sql=redact_sql(statement),
                error_type=type(error).__name__,
                error_message=str(error),
            )
        raise_translated(exc, self.target, error)


EngineT = TypeVar("EngineT", Engine, AsyncEngine)


class ProviderBase(Generic[EngineT, SessionT]):
    """Construction, read-only properties and the session logic shared by DBProvider and
    AsyncDBProvider: the primary engine and, with ``replicas`` configured, the replicas' engines
    and the router. Subclasses set the session factories (``_sessions`` for transactions,
    ``_read_sessions`` for ``session()``, routed to replicas when there are some)."""

    _sessions: Callable[[], SessionT]
    _read_sessions: Callable[[], SessionT]

    def __init__(
        self,
        config: DBConfig,
        *,
        service: str,
        is_async: bool,
        factory: Callable[..., EngineT],
    ) -> None:
        core: ProviderCore[SessionT] = ProviderCore(config, service=service, is_async=is_async)
        self._core: ProviderCore[SessionT] = core
        # one threshold object for the primary's and the replicas' engines: a live change
        # (_follow) reaches them all
        self._slow = SlowThreshold(config.slow_threshold)
        self._engine: EngineT = _open_engine(core, factory, self._slow)
        self._router: Router | None = None
        self._replica_engines: list[EngineT] = []
        if config.replicas.endpoints:
            replicas = []
            for endpoint in config.replicas.endpoints:
                replica: ProviderCore[SessionT] = ProviderCore(
                    replica_config(config, endpoint), service=service, is_async=is_async
                )
                engine = _open_engine(replica, factory, self._slow)
                self._replica_engines.append(engine)
                replicas.append((_sync_engine(engine), replica.target))
            self._router = Router(_sync_engine(self._engine), replicas, config.replicas, core.log)

    def _mark_write(self) -> None:
        """A transaction starts: this context's reads go to the primary for a while."""
        if self._router is not None:
            self._router.mark_write()

    def _begin(self) -> Flow[SessionT]:
        """A new session with its transaction begun (``begin``); a failed begin closes the
        session and raises the DBError for it."""
        core = self._core
        core.check_open()
        self._mark_write()
        session = self._sessions()
        try:
            with core.translating():
                yield Call(session.begin)
        except BaseException:
            yield Call(session.close)
            raise
        return session

    def _start_close(self) -> bool:
        """Mark the provider closed; False when it already was (close() is idempotent)."""
        if self._core.closed:
            return False
        self._core.closed = True
        metrics.untrack_pool(_sync_engine(self._engine))
        for engine in self._replica_engines:
            metrics.untrack_pool(_sync_engine(engine))
        return True

    def _follow(self, live: LiveConfig[DBConfig]) -> None:
        """Apply the live fields (``DB.live_fields``) of every later change of ``live``."""

        def apply(old: DBConfig, new: DBConfig) -> None:
            if new.slow_threshold != old.slow_threshold:
                self._slow.set(new.slow_threshold)
                self._core.log.info("slow-query threshold changed", seconds=new.slow_threshold)

        live.on_change(apply)
        live.close_with(self)

    @property
    def slow_threshold(self) -> float:
        """The slow-query threshold in effect, in seconds (0: off); ``db.yaml`` changes to
        ``slowThreshold`` apply here while the provider runs."""
        seconds = self._slow.seconds
        return 0.0 if seconds == math.inf else seconds

    @property
    def engine(self) -> EngineT:
        """The SQLAlchemy Engine / AsyncEngine (the seed's ``DB()``)."""
        return self._engine

    @property
    def config(self) -> DBConfig:
        """The resolved configuration."""
        return self._core.config

    @property
    def server(self) -> str:
        """``"<backend> <host>:<port>"`` as used in errors and logs."""
        return self._core.target.server

    def __repr__(self) -> str:
        return f"{type(self).__name__}(service={self._core.service!r}, server={self.server!r})"


def _sync_engine(engine: Engine | AsyncEngine) -> Engine:
    return engine.sync_engine if isinstance(engine, AsyncEngine) else engine


def _open_engine(
    core: ProviderCore[Any], factory: Callable[..., EngineT], slow: SlowThreshold
) -> EngineT:
    """An engine for ``core``'s config with im-infra's hooks, timer and pool metrics."""
    engine = core.make_engine(factory)
    sync_engine = _sync_engine(engine)
    configure_engine(sync_engine, core.spec)
    install(sync_engine, target=core.target, slow_threshold=slow, log=core.log)
    commit.install(sync_engine)  # marks a failure during COMMIT (outcome unknown)
    metrics.track_pool(sync_engine, core.pool_name)
    return engine
