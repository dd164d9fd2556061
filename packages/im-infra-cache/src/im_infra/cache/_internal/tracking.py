"""The tracking connection of the client-side cache (see ``im_infra.cache.local``).

:func:`tracking_flow` is the whole protocol, written once as a generator (connect, enable
tracking, subscribe, apply invalidations, PING when idle, flush and reconnect on any failure).
:func:`run_blocking` (a daemon thread) and :func:`run_async` (a task) only do its I/O on one
dedicated redis-py connection.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

from im_infra import clog
from im_infra.cache._internal.backend import Flavor, connection_kwargs
from im_infra.cache._internal.flow import Cmd, Sleep
from im_infra.cache.config import RedisConfig
from im_infra.cache.local import LocalCache
from im_infra.coord import redact_secrets

__all__ = [
    "Connect",
    "Recv",
    "Send",
    "Tracker",
    "run_async",
    "run_blocking",
    "tracking_connection",
    "tracking_flow",
]

CHANNEL = b"__redis__:invalidate"
_log = clog.get_logger("cache")


@dataclass(frozen=True, slots=True)
class Connect:
    """(Re)open the dedicated connection."""


@dataclass(frozen=True, slots=True)
class Send:
    """Send a command whose reply comes back as a message (PING in subscribed mode)."""

    args: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Recv:
    """Wait up to ``timeout`` seconds for a message; the flow receives it, or None."""

    timeout: float


TrackStep = Connect | Cmd | Send | Recv | Sleep
TrackFlow = Generator[TrackStep, Any, None]


class Tracker:
    """Stop switch and state of one tracking loop."""

    def __init__(
        self,
        store: LocalCache,
        ping_interval: float,
        reply_timeout: float,
        secrets: tuple[str, ...] = (),
    ) -> None:
        self.store = store
        self.secrets = secrets
        self.ping_interval = ping_interval
        self.reply_timeout = reply_timeout
        self.stopped = False
        self.failing = False
        """True from a failure until tracking is established again (one warning per outage)."""
        self.connected = threading.Event()
        """Set while tracking is established (tests and diagnostics wait on it)."""


def tracking_connection(cfg: RedisConfig, flavor: Flavor) -> Any:
    """A new (unconnected) redis-py connection of ``flavor`` to the configured server."""
    kw = connection_kwargs(cfg, flavor)
    kw["health_check_interval"] = 0  # its PINGs are answered as messages in subscribed mode
    host, port = cfg.nodes()[0]
    cls = flavor.ssl_connection if cfg.tls.enabled else flavor.connection
    return cls(host=host, port=port, db=cfg.db, **kw)


def _handle(store: LocalCache, message: Any) -> bool:
    """Apply one pushed message; False for anything that is not an invalidation."""
    if (
        not isinstance(message, list)
        or len(message) != 3
        or message[0] != b"message"
        or message[1] != CHANNEL
    ):
        return False
    keys = message[2]
    if keys is None:  # FLUSHDB / FLUSHALL
        store.flush(enabled=True)
    else:
        store.invalidate(k.decode() if isinstance(k, bytes) else str(k) for k in keys)
    return True


def tracking_flow(tracker: Tracker) -> TrackFlow:
    store = tracker.store
    pause = 0.05
    while not tracker.stopped:
        try:
            yield Connect()
            client_id = yield Cmd(("CLIENT", "ID"))
            prefixes = [arg for p in store.tracked for arg in ("PREFIX", p)]
            yield Cmd(("CLIENT", "TRACKING", "ON", "REDIRECT", client_id, "BCAST", *prefixes))
            yield Cmd(("SUBSCRIBE", CHANNEL))
            store.flush(enabled=True)
            tracker.connected.set()
            tracker.failing = False
            _log.info("client-side cache tracking on", prefixes=list(store.tracked))
            pause = 0.05
            awaiting_pong = False
            while not tracker.stopped:
                message = yield Recv(tracker.ping_interval)
                if message is None:
                    if awaiting_pong:
                        raise TimeoutError("no reply to PING on the tracking connection")
                    yield Send(("PING",))
                    awaiting_pong = True
                    continue
                awaiting_pong = False
                _handle(store, message)
        except Exception as exc:
            if tracker.connected.is_set() or not tracker.failing:  # once per outage
                _log.warning(
                    "client-side cache tracking unavailable: local cache emptied and bypassed "
                    "until it is back",
                    error=type(exc).__name__,
                    detail=redact_secrets(str(exc), tracker.secrets)[:200],
                )
            tracker.failing = True
            tracker.connected.clear()
            store.flush(enabled=False)
        if not tracker.stopped:
            yield Sleep(pause)
            pause = min(pause * 2, 1.0)
    tracker.connected.clear()
    store.flush(enabled=False)


def run_blocking(tracker: Tracker, connect: Callable[[], Any]) -> None:
    """Drive ``tracking_flow`` on a blocking redis-py connection made by ``connect()``."""
    flow = tracking_flow(tracker)
    conn: Any = None
    reply: Any = None
    error: BaseException | None = None
    while True:
        try:
            step = flow.send(reply) if error is None else flow.throw(error)
        except StopIteration:
            break
        reply = error = None
        try:
            if isinstance(step, Connect):
                if conn is not None:
                    conn.disconnect()
                conn = connect()
                conn.connect()
            elif isinstance(step, Cmd):
                conn.send_command(*step.args)
                reply = conn.read_response()
            elif isinstance(step, Send):
                conn.send_command(*step.args)
            elif isinstance(step, Recv):
                reply = conn.read_response() if conn.can_read(step.timeout) else None
            else:
                time.sleep(step.seconds)
        except Exception as exc:
            error = exc
    if conn is not None:
        conn.disconnect()


async def run_async(tracker: Tracker, connect: Callable[[], Any]) -> None:
    """Drive ``tracking_flow`` on an asyncio redis-py connection made by ``connect()``."""
    flow = tracking_flow(tracker)
    conn: Any = None
    reply: Any = None
    error: BaseException | None = None
    try:
        while True:
            try:
                step = flow.send(reply) if error is None else flow.throw(error)
            except StopIteration:
                break
            reply = error = None
            try:
                if isinstance(step, Connect):
                    if conn is not None:
                        await conn.disconnect()
                    conn = connect()
                    await conn.connect()
                elif isinstance(step, Cmd):
                    await conn.send_command(*step.args)
                    reply = await conn.read_response(timeout=tracker.reply_timeout)
                    if reply is None:
                        raise TimeoutError(f"no reply to {step.args[0]}")
                elif isinstance(step, Send):
                    await conn.send_command(*step.args)
                elif isinstance(step, Recv):
                    reply = await conn.read_response(timeout=step.timeout)
                else:
                    await asyncio.sleep(step.seconds)
            except Exception as exc:
                error = exc
    finally:
        tracker.connected.clear()
        tracker.store.flush(enabled=False)
        if conn is not None:
            await conn.disconnect(nowait=True)
