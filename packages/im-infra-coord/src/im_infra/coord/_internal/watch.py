"""A watch that survives stream errors: it watches again from the last revision seen + 1.

pyetcd's watch (like the Go original's) ends at its first error. ``WatchLoop`` runs one daemon
thread per watch: it (re)opens the stream on the current endpoint, delivers events in order, and
after any break (member down, network cut, etcd restart) re-opens it from ``last revision + 1`` so
no update is missed. When that revision was compacted away it calls ``resync`` to read the state
afresh and continues from there.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from im_infra.coord._internal import metrics as _metrics
from im_infra.coord._internal.etcd import EtcdClient
from im_infra.coord._internal.log import log
from im_infra.coord._internal.model import StreamBrokenError, WatchEvent, WatchStream
from im_infra.coord.errors import CoordError

_log = log.named("watch")

_MIN_BACKOFF = 0.1
_MAX_BACKOFF = 1.0


class WatchLoop:
    """Keep ``on_events`` fed with every change under ``key`` (a prefix when ``prefix``).

    ``resync()`` reads the current state (delivering it however the owner likes) and returns the
    revision it read at; it runs first when no ``start_revision`` is given, and again whenever the
    history needed to resume was compacted (unless ``resume_after_compaction``: then the watch
    goes on from the oldest revision etcd still has, for owners that want events, not state).
    ``on_events`` receives each batch of events in revision order. Both run on the loop's thread.
    """

    def __init__(
        self,
        client: EtcdClient,
        key: str,
        *,
        prefix: bool,
        on_events: Callable[[list[WatchEvent]], None],
        resync: Callable[[], int],
        name: str,
        start_revision: int | None = None,
        on_connected: Callable[[], None] | None = None,
        resume_after_compaction: bool = False,
    ) -> None:
        self._client = client
        self._key = key
        self._prefix = prefix
        self._on_events = on_events
        self._resync = resync
        self._on_connected = on_connected
        self._resume_after_compaction = resume_after_compaction
        self.name = name
        self.kind = name.split(":", 1)[0]  # "services", "config", "component": metric label
        self.revision = start_revision  # last revision delivered (None: resync needed)
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._stream: WatchStream | None = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"im-infra-coord-watch-{name}")
        self._thread.daemon = True

    def start(self) -> WatchLoop:
        self._thread.start()
        return self

    def _run(self) -> None:
        backoff = _MIN_BACKOFF
        failing_since_logged = False
        established = False  # a stream was created before: the next creation is a reconnect
        while not self._stop.is_set():
            if self._client.closed:
                return
            try:
                if self.revision is None:
                    self.revision = self._resync()
                stream = self._client.open_watch(
                    self._key, prefix=self._prefix, start_revision=self.revision + 1
                )
                with self._lock:
                    if self._stop.is_set():
                        stream.cancel()
                        return
                    self._stream = stream
                for resp in stream.responses():
                    if self._stop.is_set():
                        return
                    if resp.compact_revision:
                        self.connected.clear()
                        if self._resume_after_compaction:
                            _log.warning(
                                "watch history compacted; changes before it are lost, "
                                "resuming from the oldest revision kept",
                                watch=self.name,
                                compact_revision=resp.compact_revision,
                                lost_after=self.revision,
                            )
                            self.revision = resp.compact_revision - 1
                        else:
                            _log.warning(
                                "watch history compacted; reading the state afresh",
                                watch=self.name,
                                compact_revision=resp.compact_revision,
                            )
                            self.revision = None
                        break
                    if resp.canceled:
                        raise StreamBrokenError(f"etcd canceled the watch: {resp.cancel_reason}")
                    if resp.created:
                        if established:
                            _metrics.watch_reconnected(self.kind)
                        established = True
                        if failing_since_logged:
                            _log.info("watch re-established", watch=self.name, at=self.revision)
                            failing_since_logged = False
                        backoff = _MIN_BACKOFF
                        self.connected.set()
                        if self._on_connected is not None:
                            try:
                                self._on_connected()
                            except Exception:
                                _log.exception("watch on_connected hook failed", watch=self.name)
                    if resp.events:
                        self._deliver(resp.events)
            except CoordError as exc:
                if self._stop.is_set():
                    return
                self.connected.clear()
                if not failing_since_logged:
                    _log.warning(
                        "watch broken; watching again from the last revision + 1",
                        watch=self.name,
                        revision=self.revision,
                        cause=str(exc),
                    )
                    failing_since_logged = True
            except Exception:
                if self._stop.is_set():
                    return
                self.connected.clear()
                _log.exception("watch failed unexpectedly; watching again", watch=self.name)
            finally:
                with self._lock:
                    if self._stream is not None:
                        self._stream.cancel()
                        self._stream = None
            if self._stop.wait(backoff):
                return
            backoff = min(backoff * 2, _MAX_BACKOFF)

    def _deliver(self, events: list[WatchEvent]) -> None:
        try:
            self._on_events(events)
        except Exception:
            _log.exception("watch event handler failed", watch=self.name)
        self.revision = events[-1].kv.mod_revision

    def stop(self, timeout: float = 2.0) -> None:
        """Cancel the stream and end the thread (idempotent)."""
        self._stop.set()
        with self._lock:
            if self._stream is not None:
                self._stream.cancel()
                self._stream = None
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)
