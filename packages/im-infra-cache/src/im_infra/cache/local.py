"""Client-side caching: GETs of configured key prefixes served from process memory, kept
coherent by Redis itself (``CLIENT TRACKING``, Redis 6+).

How it works (the same for the blocking and the asyncio cache):

* One extra connection per cache, the *tracking connection*, runs
  ``CLIENT TRACKING ON REDIRECT <its own id> BCAST PREFIX <p> ...`` and subscribes to
  ``__redis__:invalidate`` (RESP2 redirect mode: it works with every Redis >= 6, unlike redis-py's
  own client-side cache, which requires RESP3 and Redis 7.4). From then on Redis publishes every
  key changed under those prefixes, by any client, to that connection; the key is dropped from
  the local cache as the message arrives (a background thread, or a task on the asyncio cache's
  loop). ``FLUSHDB``/``FLUSHALL`` drop everything.
* A GET of a covered key is answered locally when present; otherwise it goes to Redis and the
  reply is stored, unless an invalidation of that key arrived while the GET was in flight (the
  reply may be older than the change). Writes through this cache drop their keys locally at once
  (read-your-writes), before and after the command.
* Nothing is cached before the tracking connection is up. When it fails (Redis restarted or
  killed, network cut, no reply to a PING within ``ping_interval``) the whole local cache is
  dropped and caching stops until tracking is re-established: a lost invalidation can never
  leave a stale entry behind. ``max_age`` bounds an entry's life regardless.
* Bounded (``max_entries``, least recently used evicted). Metrics:
  ``im_infra.cache.local.{hits,misses,invalidations,flushes,evictions}``.

Covered: ``get``, ``get_bytes``, ``get_obj`` of keys under ``localCache.prefixes`` (relative to
the cache's key prefix), in single-node mode. Pipelines and scripts are not routed through the
local cache (their writes are still seen through the server's invalidations).
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from opentelemetry.metrics import CallbackOptions, Observation

from im_infra.cache._internal import metrics

if TYPE_CHECKING:
    from im_infra.cache.features import LocalCacheConfig

__all__ = ["MISS", "LocalCache"]

MISS: Any = object()
"""Returned by :meth:`LocalCache.lookup` for a key it does not hold."""

_stores: weakref.WeakSet[LocalCache] = weakref.WeakSet()


class LocalCache:
    """The in-process store (thread-safe): entries, in-flight fills, counters."""

    def __init__(self, cfg: LocalCacheConfig, key_prefix: str, service: str) -> None:
        self.prefixes = tuple(key_prefix + p for p in cfg.prefixes)
        """Full key prefixes (the cache's key prefix included) whose GETs are cached."""
        self.tracked = tuple(dict.fromkeys(self.prefixes))
        self._max = cfg.max_entries
        self._max_age = cfg.max_age
        self._data: OrderedDict[str, tuple[Any, float]] = OrderedDict()
        self._pending: dict[str, object] = {}
        self._lock = threading.Lock()
        self._attrs = {"service": service}
        self.enabled = False
        """True while the tracking connection is up (only then are replies stored)."""
        self.hits = self.misses = self.invalidations = self.flushes = self.evictions = 0
        _stores.add(self)

    def __len__(self) -> int:
        return len(self._data)

    def covers(self, full: str) -> bool:
        return full.startswith(self.prefixes)

    def lookup(self, full: str) -> Any:
        """The cached reply of ``full``, or MISS."""
        with self._lock:
            entry = self._data.get(full)
            if entry is not None:
                if entry[1] > time.monotonic():
                    self._data.move_to_end(full)
                    self.hits += 1
                    return entry[0]
                del self._data[full]
            self.misses += 1
            return MISS

    def begin(self, full: str) -> object | None:
        """A fill of ``full`` starts (its GET is about to be sent): a token for :meth:`put`, or
        None when nothing may be stored now (tracking is down)."""
        with self._lock:
            if not self.enabled:
                return None
            token = self._pending.get(full)
            if token is None:
                token = self._pending[full] = object()
            return token

    def put(self, full: str, token: object, reply: Any) -> None:
        """Store ``reply`` unless ``full`` was invalidated (or everything flushed) since
        :meth:`begin` returned ``token``."""
        with self._lock:
            if self._pending.get(full) is not token:
                return
            del self._pending[full]
            self._data[full] = (reply, time.monotonic() + self._max_age)
            self._data.move_to_end(full)
            while len(self._data) > self._max:
                self._data.popitem(last=False)
                self.evictions += 1

    def abort(self, full: str, token: object) -> None:
        """The fill failed: forget its token."""
        with self._lock:
            if self._pending.get(full) is token:
                del self._pending[full]

    def invalidate(self, keys: Iterable[str]) -> None:
        """Drop ``keys`` (and cancel their in-flight fills)."""
        with self._lock:
            for key in keys:
                self._pending.pop(key, None)
                if self._data.pop(key, None) is not None:
                    self.invalidations += 1

    def invalidate_args(self, args: tuple[Any, ...]) -> None:
        """Drop every covered key among a write command's arguments."""
        prefixes = self.prefixes
        hit = [a for a in args[1:] if type(a) is str and a.startswith(prefixes)]
        if hit:
            self.invalidate(hit)

    def flush(self, *, enabled: bool) -> None:
        """Drop everything; store again from now on only when ``enabled``."""
        with self._lock:
            self._data.clear()
            self._pending.clear()
            self.enabled = enabled
            self.flushes += 1

    def observe(self, name: str) -> Observation:
        return Observation(getattr(self, name), self._attrs)


def _observer(name: str) -> Any:
    def observe(_options: CallbackOptions) -> Iterable[Observation]:
        return [store.observe(name) for store in list(_stores)]

    return observe


for _name, _what in (
    ("hits", "GETs answered from the local cache"),
    ("misses", "GETs of covered keys that went to Redis"),
    ("invalidations", "local entries dropped because the key changed"),
    ("flushes", "times the whole local cache was dropped (tracking connection lost/regained)"),
    ("evictions", "entries evicted to stay within maxEntries"),
):
    metrics.meter.create_observable_counter(
        f"im_infra.cache.local.{_name}",
        callbacks=[_observer(_name)],
        unit="{event}",
        description=f"Client-side cache: {_what}, by service.",
    )
