"""Cache-aside: read a key, or load it (once) and cache it; invalidate after a database write.

:class:`Aside` (blocking) and :class:`AsyncAside` (asyncio) share every operation: each is a flow
(``_internal/flow.py``) run by the owning cache's driver, under the cache's in-process single
flight. What a call does, in order (go-zero's ``stores/cache`` ``Take``, with cashews' options):

1. ``GET``; a fresh entry is returned. A stale entry (past its TTL, inside ``stale_ttl``) is
   returned too and one background refresh per key and process is started.
2. On a miss, with ``lock`` on: ``SET NX PX`` on ``<key>:lock``. The holder loads; the others
   poll the key for at most ``lock_wait`` seconds, then load themselves (a crashed or slow holder
   never blocks anyone for longer).
3. The loader runs (sync, or async on the asyncio cache); its value is stored with the TTL minus
   a random jitter, a ``None`` is stored as "not found" under ``not_found_ttl``.

A Redis error while reading or storing does not fail the call: the loader's value is returned
uncached (logged once per call, counted in ``im_infra.cache.aside.degraded``).

Stored values are an 11-byte header (marker, kind, fresh-until in ms since the epoch) followed by
the serialized value: keys written here are read back here. Stale-serving compares wall clocks of
the writer and the reader (NTP-synchronised hosts assumed).
"""

from __future__ import annotations

import contextlib
import random
import struct
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, overload

from im_infra import clog
from im_infra.cache._internal import metrics
from im_infra.cache._internal.errors import BACKEND_ERRORS
from im_infra.cache._internal.flow import Call, Cmd, Flow, Sleep, script_flow
from im_infra.cache.errors import CacheError, SerializationError
from im_infra.cache.lock import RELEASE_LUA, RELEASE_SHA

if TYPE_CHECKING:
    from im_infra.cache._internal.base import SomeCache
    from im_infra.cache.features import AsideConfig

__all__ = ["Aside", "AsyncAside", "Invalidation"]

T = TypeVar("T")
_log = clog.get_logger("cache")

_MARK = b"\xa5"
_VALUE, _NOT_FOUND = b"v", b"n"
_HEADER = struct.Struct(">cc Q")  # marker, kind, fresh-until (ms since the epoch)
_POLL_FIRST, _POLL_MAX = 0.002, 0.05

loads_counter = metrics.meter.create_counter(
    "im_infra.cache.aside.loads",
    unit="{load}",
    description="Loader calls made by cache-aside, by result (value, not_found, error).",
)
degraded_counter = metrics.meter.create_counter(
    "im_infra.cache.aside.degraded",
    unit="{call}",
    description="Cache-aside calls that could not read or store in Redis (value served uncached).",
)
invalidation_failures = metrics.meter.create_counter(
    "im_infra.cache.aside.invalidation_failures",
    unit="{key}",
    description="Keys whose invalidating DEL still failed after every background retry.",
)


@dataclass(frozen=True, slots=True)
class Invalidation:
    """What :meth:`Aside.invalidate` did: ``deleted`` keys are gone; ``pending`` keys could not be
    deleted now and are retried in the background (those that still fail end up in
    :meth:`Aside.undeleted`)."""

    deleted: tuple[str, ...]
    pending: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.pending


def encode_entry(kind: bytes, fresh_ms: int, payload: bytes) -> bytes:
    return _HEADER.pack(_MARK, kind, fresh_ms) + payload


def decode_entry(raw: bytes) -> tuple[bytes, int, bytes]:
    """(kind, fresh-until ms, payload) of a stored entry; SerializationError if it is not one."""
    if len(raw) < _HEADER.size or raw[:1] != _MARK:
        raise SerializationError("the key holds a value not written by cache-aside")
    _mark, kind, fresh = _HEADER.unpack_from(raw)
    return kind, fresh, raw[_HEADER.size :]


class _AsideOps:
    """The cache-aside operations; methods return the value (blocking) or an awaitable."""

    def __init__(
        self,
        cache: SomeCache,
        *,
        ttl: float | None = None,
        not_found_ttl: float | None = None,
        stale_ttl: float | None = None,
        jitter: float | None = None,
        lock: bool | None = None,
        on_undeleted: Callable[[tuple[str, ...]], None] | None = None,
    ) -> None:
        for name, value in (("ttl", ttl), ("not_found_ttl", not_found_ttl)):
            if value is not None and value < (0 if name != "ttl" else 1e-3):
                raise CacheError(f"aside: {name} must be positive, got {value!r}")
        if stale_ttl is not None and stale_ttl < 0:
            raise CacheError(f"aside: stale_ttl must be >= 0, got {stale_ttl!r}")
        if jitter is not None and not 0 <= jitter < 1:
            raise CacheError(f"aside: jitter must be in [0, 1), got {jitter!r}")
        self._cache = cache
        self._overrides = {
            k: v
            for k, v in (
                ("ttl", ttl),
                ("not_found_ttl", not_found_ttl),
                ("stale_ttl", stale_ttl),
                ("jitter", jitter),
                ("lock", lock),
            )
            if v is not None
        }
        self._on_undeleted = on_undeleted
        self._refreshing: set[str] = set()
        self._undeleted: set[str] = set()
        self._undeleted_lock = threading.Lock()  # the background worker updates it

    def _settings(self) -> AsideConfig:
        """The cache's current ``aside`` section (live) with this object's overrides."""
        base = self._cache.config.aside
        return base.model_copy(update=self._overrides) if self._overrides else base

    # -- flows ---
    def _store_flow(self, full: str, value: Any, cfg: AsideConfig) -> Flow[None]:
        if value is None:
            if not cfg.not_found_ttl:
                return
            kind, payload, ttl = _NOT_FOUND, b"", cfg.not_found_ttl
        else:
            kind, payload, ttl = _VALUE, self._dumps(value), cfg.ttl
        ttl *= 1.0 - random.random() * cfg.jitter
        now_ms = int(time.time() * 1000)
        entry = encode_entry(kind, now_ms + int(ttl * 1000), payload)
        px = max(1, int((ttl + cfg.stale_ttl) * 1000))
        try:
            yield Cmd(("SET", full, entry, "PX", px))
        except BACKEND_ERRORS as exc:
            self._degraded("store", full, exc)

    def _dumps(self, value: Any) -> bytes:
        try:
            return self._cache.serializer.dumps(value)
        except Exception as exc:
            raise SerializationError(
                f"aside: cannot serialize a {type(value).__name__}: {exc}"
            ) from exc

    def _value(self, kind: bytes, payload: bytes) -> Any:
        if kind == _NOT_FOUND:
            return None
        try:
            return self._cache.serializer.loads(payload)
        except Exception as exc:
            raise SerializationError(f"aside: cannot deserialize the stored value: {exc}") from exc

    def _load_flow(self, full: str, loader: Callable[[], Any], cfg: AsideConfig) -> Flow[Any]:
        try:
            value = yield Call(loader)
        except BaseException:
            loads_counter.add(1, {"result": "error"})
            raise
        loads_counter.add(1, {"result": "not_found" if value is None else "value"})
        yield from self._store_flow(full, value, cfg)
        return value

    def _read_flow(self, full: str) -> Flow[tuple[bytes, int, bytes] | None]:
        raw = yield Cmd(("GET", full))
        return None if raw is None else decode_entry(raw)

    def _get_flow(self, full: str, loader: Callable[[], Any]) -> Flow[Any]:
        cfg = self._settings()
        try:
            entry = yield from self._read_flow(full)
        except BACKEND_ERRORS as exc:
            self._degraded("read", full, exc)
            return (yield Call(loader))
        if entry is not None:
            kind, fresh_ms, payload = entry
            if fresh_ms <= time.time() * 1000 and full not in self._refreshing:
                self._refreshing.add(full)  # stale: one background refresh per key and process
                self._cache._spawn(self._refresh_flow(full, loader, cfg))
            return self._value(kind, payload)
        if not cfg.lock:
            return (yield from self._load_flow(full, loader, cfg))
        return (yield from self._locked_load_flow(full, loader, cfg))

    def _locked_load_flow(
        self, full: str, loader: Callable[[], Any], cfg: AsideConfig
    ) -> Flow[Any]:
        lock_key, token = full + ":lock", uuid.uuid4().hex
        try:
            held = yield Cmd(("SET", lock_key, token, "PX", int(cfg.lock_ttl * 1000), "NX"))
            if held:
                entry = yield from self._read_flow(full)  # filled between our GET and the lock?
            else:
                entry = yield from self._wait_flow(full, cfg.lock_wait)
        except BACKEND_ERRORS as exc:
            self._degraded("lock", full, exc)
            return (yield Call(loader))
        if entry is not None:
            return self._value(entry[0], entry[2])
        try:
            return (yield from self._load_flow(full, loader, cfg))
        finally:
            if held:
                with contextlib.suppress(*BACKEND_ERRORS):  # else it expires after lock_ttl
                    yield from script_flow(RELEASE_LUA, RELEASE_SHA, [lock_key], [token])

    def _wait_flow(self, full: str, wait: float) -> Flow[tuple[bytes, int, bytes] | None]:
        """Poll ``full`` until another process stored it, for at most ``wait`` seconds."""
        deadline = time.monotonic() + wait
        pause = _POLL_FIRST
        while (left := deadline - time.monotonic()) > 0:
            yield Sleep(min(pause, left))
            pause = min(pause * 2, _POLL_MAX)
            entry = yield from self._read_flow(full)
            if entry is not None:
                return entry
        return None

    def _refresh_flow(self, full: str, loader: Callable[[], Any], cfg: AsideConfig) -> Flow[None]:
        try:
            yield from self._load_flow(full, loader, cfg)
        except Exception as exc:  # the background has no caller to raise to
            _log.warning(
                "cache-aside background refresh failed", key=full, error=type(exc).__name__
            )
        finally:
            self._refreshing.discard(full)

    def _invalidate_flow(self, keys: tuple[str, ...]) -> Flow[Invalidation]:
        fulls = self._cache._keys(keys)
        try:
            yield Cmd(("DEL", *fulls))
        except BACKEND_ERRORS as exc:
            _log.warning(
                "cache-aside invalidation failed, retrying in the background",
                keys=len(keys),
                error=type(exc).__name__,
            )
            self._cache._spawn(self._retry_flow(keys, fulls, self._settings()))
            return Invalidation(deleted=(), pending=keys)
        with self._undeleted_lock:
            self._undeleted.difference_update(keys)
        return Invalidation(deleted=keys, pending=())

    def _retry_flow(self, keys: tuple[str, ...], fulls: list[str], cfg: AsideConfig) -> Flow[None]:
        pause = cfg.invalidate_backoff
        for _ in range(cfg.invalidate_retries):
            yield Sleep(pause)
            pause *= 2
            try:
                yield Cmd(("DEL", *fulls))
            except BACKEND_ERRORS:
                continue
            with self._undeleted_lock:
                self._undeleted.difference_update(keys)
            return
        with self._undeleted_lock:
            self._undeleted.update(keys)
        invalidation_failures.add(len(keys))
        _log.error(
            "cache-aside could not invalidate keys: they may serve stale values until they expire",
            keys=list(keys),
            retries=cfg.invalidate_retries,
        )
        if self._on_undeleted is not None:
            try:
                self._on_undeleted(keys)
            except Exception as exc:
                _log.warning("on_undeleted callback failed", error=type(exc).__name__)

    def _degraded(self, what: str, full: str, exc: BaseException) -> None:
        degraded_counter.add(1, {"step": what})
        _log.warning(
            "cache-aside: Redis failed, serving the loader's value uncached",
            step=what,
            key=full,
            error=type(exc).__name__,
        )

    # -- API ---
    def get(self, key: str, loader: Callable[[], Any]) -> Any:
        """The cached value of ``key``, or ``loader()``'s (stored for the next caller). A loader
        result of None means "not found" and is cached as such for ``not_found_ttl``. Concurrent
        calls for one key in this process run the loader once; the loader's exceptions propagate
        unchanged (to every caller waiting on that load) and nothing is cached."""
        full = self._cache.key_prefix + key
        return self._cache._single(full, lambda: self._get_flow(full, loader))

    def invalidate(self, *keys: str) -> Any:
        """Delete ``keys`` (after the database write). A failed DEL does not raise: the result's
        ``pending`` keys are retried in the background (``invalidate_retries`` times with
        doubling pauses); keys that still fail are logged, counted, passed to ``on_undeleted``
        and listed by :meth:`undeleted`."""
        if not keys:
            raise CacheError("invalidate: no keys given")
        return self._cache._drive(self._invalidate_flow(keys))

    def undeleted(self) -> frozenset[str]:
        """Keys whose invalidation failed after every retry (cleared by a later successful
        invalidation of the key)."""
        with self._undeleted_lock:
            return frozenset(self._undeleted)


class Aside(_AsideOps):
    """Blocking cache-aside; get it from ``Cache.aside()``."""

    if TYPE_CHECKING:

        def get(self, key: str, loader: Callable[[], T]) -> T: ...
        def invalidate(self, *keys: str) -> Invalidation: ...


class AsyncAside(_AsideOps):
    """asyncio cache-aside; loaders may be sync or async. Get it from ``AsyncCache.aside()``."""

    if TYPE_CHECKING:

        @overload
        async def get(self, key: str, loader: Callable[[], Awaitable[T]]) -> T: ...
        @overload
        async def get(self, key: str, loader: Callable[[], T]) -> T: ...
        async def get(self, key: str, loader: Callable[[], Any]) -> Any: ...
        async def invalidate(self, *keys: str) -> Invalidation: ...
