"""Read replicas: which engine a statement runs on, and the replicas' health and lag.

:class:`Router` does no I/O: it classifies statements, keeps each replica's state and the
read-your-writes deadline of the current context. The health checks are one statement per
backend (:func:`lag_query`) read by :func:`lag_of`; the blocking provider runs them from a
thread (:class:`CheckerThread`), the asyncio provider from a task (:func:`check_forever`).
"""

from __future__ import annotations

import asyncio
import math
import re
import threading
import time
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, event
from sqlalchemy.engine import ExceptionContext, make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import TextClause

from im_infra.clog import Logger
from im_infra.db._internal.target import Target
from im_infra.db._internal.translate import translate
from im_infra.db.config import DBConfig, ReplicaEndpoint, ReplicasConfig
from im_infra.db.errors import ConfigError, DBConnectionError

PRIMARY = -1
_ROUTE = "im_infra.db.route"  # Session.info key: PRIMARY or the index of the session's replica
_LOCKING_TEXT = re.compile(
    r"\bFOR\s+(UPDATE|SHARE|NO\s+KEY\s+UPDATE|KEY\s+SHARE)\b|\bLOCK\s+IN\s+SHARE\s+MODE\b|\bINTO\b",
    re.IGNORECASE,
)


def replica_config(primary: DBConfig, endpoint: ReplicaEndpoint) -> DBConfig:
    """The replica's DBConfig: the primary's, with what ``endpoint`` sets replaced."""
    if primary.driver == "sqlite" and primary.dsn is None:
        raise ConfigError("db config: replicas are not supported for sqlite")
    fields = endpoint.model_dump(exclude_none=True, exclude={"dsn"})
    update: dict[str, Any] = {"replicas": ReplicasConfig()}
    if endpoint.dsn is not None:
        update["dsn"] = endpoint.dsn
    elif primary.dsn is not None:
        url = make_url(primary.dsn.get_secret_value())
        if url.get_backend_name() == "sqlite":
            raise ConfigError("db config: replicas are not supported for sqlite")
        url = url.set(
            host=fields.get("host", url.host),
            port=fields.get("port", url.port),
            username=fields.get("user", url.username),
            database=fields.get("database", url.database),
            query=fields.get("params", url.query),
        )
        if endpoint.password is not None:
            url = url.set(password=endpoint.password.get_secret_value())
        update["dsn"] = type(primary.dsn)(url.render_as_string(hide_password=False))
    else:
        update.update(fields)
        if endpoint.password is not None:
            update["password"] = endpoint.password
    return primary.model_copy(update=update)


def is_plain_read(clause: Any) -> bool:
    """A statement a replica may run: a SELECT without FOR UPDATE / FOR SHARE (text: starting
    with SELECT, without a locking clause or INTO)."""
    if clause is None:
        return False
    if isinstance(clause, TextClause):
        sql = clause.text.lstrip(" \t\r\n(")
        return sql[:6].upper() == "SELECT" and _LOCKING_TEXT.search(sql) is None
    if getattr(clause, "is_select", False):
        return getattr(clause, "_for_update_arg", None) is None
    return False


@dataclass
class ReplicaState:
    target: Target
    usable: bool = True  # optimistic until the first check
    lag: float = 0.0
    reason: str = ""


class Router:
    """Routes a Session's statements between the primary and the replicas."""

    def __init__(
        self,
        primary: Engine,
        replicas: Sequence[tuple[Engine, Target]],
        config: ReplicasConfig,
        log: Logger,
    ) -> None:
        self.primary = primary
        self.binds = [engine for engine, _target in replicas]
        self.states = [ReplicaState(target) for _engine, target in replicas]
        self.config = config
        self.log = log
        self._next = 0
        self._lock = threading.Lock()
        self._fresh_until: ContextVar[float] = ContextVar(
            f"im_infra.db.read_your_writes.{id(self):x}", default=-math.inf
        )
        for index, engine in enumerate(self.binds):
            self._watch_errors(engine, index)

    # -- routing ---------------------------------------------------------------
    def mark_write(self) -> None:
        """Reads of this context go to the primary for ``read_your_writes`` seconds."""
        window = self.config.read_your_writes
        if window > 0:
            self._fresh_until.set(time.monotonic() + window)

    def bind_for(self, session: Session, clause: Any) -> Engine:
        """The engine of the session's next statement."""
        route = session.info.get(_ROUTE)
        if route == PRIMARY:
            return self.primary
        if session._flushing or not is_plain_read(clause):
            session.info[_ROUTE] = PRIMARY  # from now on this session reads its own writes
            if clause is None or not getattr(clause, "is_select", False):
                self.mark_write()
            return self.primary
        if route is not None:
            return self.binds[route]
        if self._fresh_until.get() > time.monotonic():
            return self.primary  # read-your-writes: no session pinning, the window may end
        index = self.pick()
        if index is None:
            return self.primary
        session.info[_ROUTE] = index
        return self.binds[index]

    def reroute(self, session: Session, engine: Engine, error: BaseException) -> Engine | None:
        """The engine to use instead of replica ``engine``, which could not give the session a
        connection (None: ``engine`` is not a replica). The replica is marked down."""
        try:
            index = self.binds.index(engine)
        except ValueError:
            return None
        self.down(index, error)
        session.info.pop(_ROUTE, None)
        replacement = self.pick()
        if replacement is None:
            session.info[_ROUTE] = PRIMARY
            return self.primary
        session.info[_ROUTE] = replacement
        return self.binds[replacement]

    def pick(self) -> int | None:
        """The next usable replica, round robin; None when none is."""
        count = len(self.states)
        with self._lock:
            start = self._next
            for step in range(count):
                index = (start + step) % count
                if self.states[index].usable:
                    self._next = index + 1
                    return index
        return None

    # -- health ------------------------------------------------------------------
    def checked(self, index: int, lag: float | None) -> None:
        """Record a successful check; ``lag`` None: not replicating (unusable)."""
        if lag is None:
            self._set(index, False, math.inf, "replication is not running")
        elif lag > self.config.max_lag:
            self._set(index, False, lag, f"replication lag {lag:.1f}s > maxLag")
        else:
            self._set(index, True, lag, "")

    def down(self, index: int, error: BaseException) -> None:
        """Record a failed check or a connection failure on a read."""
        target = self.states[index].target
        if isinstance(error, SQLAlchemyError):
            error = translate(error, target)  # the typed error, its message scrubbed
        reason = target.scrub(f"{type(error).__name__}: {error}")
        self._set(index, False, math.inf, reason)

    def _set(self, index: int, usable: bool, lag: float, reason: str) -> None:
        state = self.states[index]
        changed = state.usable != usable
        state.usable, state.lag, state.reason = usable, lag, reason
        if changed and usable:
            self.log.info("replica usable again", replica=state.target.server, lag_s=lag)
        elif changed:
            self.log.warning("replica skipped", replica=state.target.server, reason=reason)

    def _watch_errors(self, engine: Engine, index: int) -> None:
        target = self.states[index].target

        @event.listens_for(engine, "handle_error")
        def _on_error(ctx: ExceptionContext) -> None:
            error = translate(ctx.sqlalchemy_exception or ctx.original_exception, target)
            if isinstance(error, DBConnectionError):
                self.down(index, error)


def lag_query(backend: str) -> str:
    """The statement that tells a replica's replication delay (see :func:`lag_of`)."""
    if backend == "postgresql":
        # Everything received is replayed: no lag, however long ago the last transaction was
        # (an idle primary). Otherwise (behind, or not streaming yet after a restart): the age
        # of the last replayed transaction, an upper bound of the delay.
        return (
            "SELECT CASE WHEN NOT pg_is_in_recovery() THEN 0 "
            "WHEN pg_last_wal_receive_lsn() <= pg_last_wal_replay_lsn() THEN 0 "
            "ELSE EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()) END"
        )
    return "SHOW SLAVE STATUS"  # MariaDB and MySQL (MySQL 8.4: SHOW REPLICA STATUS)


def lag_of(backend: str, rows: Sequence[Any]) -> float | None:
    """Seconds behind the primary; None when replication is not running."""
    if backend == "postgresql":
        value = rows[0][0] if rows else None
        return 0.0 if value is None else max(0.0, float(value))
    if not rows:
        return 0.0  # not a replica itself (a proxy or a read endpoint): nothing to measure
    seconds = rows[0]._mapping.get("Seconds_Behind_Master")
    return None if seconds is None else float(seconds)


class CheckerThread(threading.Thread):
    """Checks every replica every ``check_interval`` seconds (blocking provider)."""

    def __init__(self, router: Router) -> None:
        super().__init__(name="im-infra-db-replica-check", daemon=True)
        self.router = router
        self.stopping = threading.Event()

    def run(self) -> None:
        router = self.router
        while True:
            for index, engine in enumerate(router.binds):
                backend = router.states[index].target.backend
                try:
                    with engine.connect() as conn:
                        rows = conn.exec_driver_sql(lag_query(backend)).all()
                    router.checked(index, lag_of(backend, rows))
                except Exception as exc:  # any failure: the replica is not usable now
                    router.down(index, exc)
            if self.stopping.wait(router.config.check_interval):
                return


async def check_forever(router: Router, engines: Sequence[AsyncEngine]) -> None:
    """The asyncio provider's checker task (cancelled by close())."""
    while True:
        for index, engine in enumerate(engines):
            backend = router.states[index].target.backend
            try:
                async with engine.connect() as conn:
                    rows = (await conn.exec_driver_sql(lag_query(backend))).all()
                router.checked(index, lag_of(backend, rows))
            except Exception as exc:
                router.down(index, exc)
        await asyncio.sleep(router.config.check_interval)


class RoutingSession(Session):
    """A Session whose statements the :class:`Router` places (``provider.session()`` with
    replicas configured, blocking and asyncio alike: AsyncSession runs one of these)."""

    def __init__(self, *args: Any, router: Router, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._router = router

    def get_bind(
        self,
        mapper: Any = None,
        *,
        clause: Any = None,
        bind: Any = None,
        _sa_skip_events: bool | None = None,
        _sa_skip_for_implicit_returning: bool = False,
        **kw: Any,
    ) -> Engine:
        return self._router.bind_for(self, clause)

    def _connection_for_bind(
        self, engine: Any, execution_options: Any = None, **kw: Any
    ) -> Connection:
        # Where the Session opens its connection for a bind (SQLAlchemy 2's private hook; a
        # failed connect leaves the session's transaction untouched). A replica that cannot
        # give a connection (stopped, unreachable: the pool's pre-ping and reconnect failed) is
        # marked down and the read goes to the next usable replica or the primary.
        while True:
            try:
                return super()._connection_for_bind(engine, execution_options, **kw)
            except DBAPIError as exc:
                replacement = self._router.reroute(self, engine, exc)
                if replacement is None:
                    raise
                engine = replacement
