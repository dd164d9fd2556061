"""One multiplexed config watch per config manager: every subscriber shares one etcd stream.

The hub watches the environment's whole prefix with one :class:`WatchLoop` and hands each
subscriber the events of the keys it subscribed to, in revision order. Its start revision is
fixed when the first subscriber arrives (before ``subscribe`` returns), so a subscriber that reads
its documents after subscribing misses nothing. After a compaction (or when etcd was unreachable
when the watch started) every subscriber's ``resync`` reads its documents afresh.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from im_infra.coord._internal.etcd import EtcdClient
from im_infra.coord._internal.log import log
from im_infra.coord._internal.model import WatchEvent
from im_infra.coord._internal.watch import WatchLoop
from im_infra.coord.errors import CoordUnavailable

_log = log.named("config")


@dataclass(eq=False)
class Subscription:
    """A subscriber's keys and callbacks; ``cancel()`` removes it from its hub (idempotent)."""

    hub: ConfigHub
    keys: frozenset[str]
    on_events: Callable[[list[WatchEvent]], None]
    resync: Callable[[], None]
    active: bool = field(default=True)

    def cancel(self) -> None:
        self.hub._remove(self)


class ConfigHub:
    """The single watch on ``root`` (a prefix) shared by all of one manager's subscribers."""

    def __init__(self, client: EtcdClient, root: str) -> None:
        self._client = client
        self._root = root
        self._subs: list[Subscription] = []
        self._loop: WatchLoop | None = None
        self._lock = threading.RLock()  # re-entrant: a GC finalizer may close a subscriber
        self._closed = False

    @property
    def watching(self) -> bool:
        """Whether the shared watch runs (there is at least one subscriber)."""
        return self._loop is not None

    @property
    def loop(self) -> WatchLoop | None:
        return self._loop

    def current_revision(self) -> int:
        """The store revision now (CoordUnavailable when etcd does not answer)."""
        return self._client.range(self._root, prefix=True, count_only=True).revision

    def subscribe(
        self,
        keys: Iterable[str],
        on_events: Callable[[list[WatchEvent]], None],
        resync: Callable[[], None],
    ) -> Subscription:
        """Deliver the events of ``keys`` to ``on_events`` (on the watch thread) from now on."""
        sub = Subscription(self, frozenset(keys), on_events, resync)
        with self._lock:
            if self._closed:
                raise RuntimeError("config hub is closed")
            self._subs.append(sub)
            if self._loop is None:
                try:
                    start: int | None = self.current_revision()
                except CoordUnavailable:
                    start = None  # the loop resyncs every subscriber once etcd answers
                self._loop = WatchLoop(
                    self._client,
                    self._root,
                    prefix=True,
                    on_events=self._dispatch,
                    resync=self._resync,
                    name=f"component:{self._root}",
                    start_revision=start,
                ).start()
        return sub

    def _remove(self, sub: Subscription) -> None:
        with self._lock:
            sub.active = False
            if sub in self._subs:
                self._subs.remove(sub)
            loop = self._loop if not self._subs else None
            if loop is not None:
                self._loop = None
        if loop is not None:
            loop.stop()

    def _dispatch(self, events: list[WatchEvent]) -> None:
        with self._lock:
            subs = list(self._subs)
        for sub in subs:
            mine = [ev for ev in events if ev.kv.key in sub.keys]
            if mine and sub.active:
                try:
                    sub.on_events(mine)
                except Exception:
                    _log.exception("config subscriber failed", keys=sorted(sub.keys))

    def _resync(self) -> int:
        revision = self.current_revision()
        with self._lock:
            subs = list(self._subs)
        for sub in subs:
            if sub.active:
                try:
                    sub.resync()
                except CoordUnavailable:
                    raise
                except Exception:
                    _log.exception("config subscriber resync failed", keys=sorted(sub.keys))
        return revision

    def close(self) -> None:
        """Stop the shared watch (idempotent)."""
        with self._lock:
            self._closed = True
            loop, self._loop = self._loop, None
            for sub in self._subs:
                sub.active = False
            self._subs = []
        if loop is not None:
            loop.stop()
