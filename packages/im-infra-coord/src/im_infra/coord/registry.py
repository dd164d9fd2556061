"""Service registry: registration with a kept-alive lease, watch-fed discovery, round-robin pick.

An instance is the key ``/im-infra/services/{name}/{id}`` holding a JSON object, bound to a lease.
Unlike the Go original (and go-zero, kratos), a registration whose lease is lost (etcd down longer
than the TTL, a network cut) is re-created automatically once etcd answers again.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable

from im_infra.clog.lifecycle import Closing
from im_infra.coord._internal import metrics as _metrics
from im_infra.coord._internal.etcd import EtcdClient
from im_infra.coord._internal.lease import KeptLease, LeaseKeeper
from im_infra.coord._internal.log import log
from im_infra.coord._internal.model import WatchEvent
from im_infra.coord._internal.watch import WatchLoop
from im_infra.coord.errors import ConfigError, CoordError, CoordUnavailable, NoInstanceAvailable
from im_infra.coord.types import ServiceInstance

__all__ = [  # ServiceInstance lives in types.py; imported from here too
    "DEFAULT_REGISTRATION_TTL",
    "SERVICE_ROOT",
    "EtcdRegistry",
    "ServiceInstance",
    "WatchHandle",
    "service_key",
]

SERVICE_ROOT = "/im-infra/services/"
DEFAULT_REGISTRATION_TTL = 10

_log = log.named("registry")


def _check(kind: str, value: str) -> None:
    if not value or "/" in value:
        raise ConfigError(f"invalid service {kind} {value!r}: must be non-empty without '/'")


def service_key(name: str, instance_id: str) -> str:
    return f"{SERVICE_ROOT}{name}/{instance_id}"


class _Registration:
    def __init__(self, instance: ServiceInstance, ttl: int) -> None:
        self.instance = instance
        self.ttl = ttl
        self.key = service_key(instance.name, instance.id)
        self.lease: KeptLease | None = None
        self.active = True
        self.stop = threading.Event()


class WatchHandle(Closing):
    """Handle of a ``registry.watch()`` subscription; ``cancel()`` (or ``close()``, or leaving
    a ``with`` block) stops the callbacks. Idempotent."""

    def __init__(self, cache: _ServiceCache, callback: Callable[[list[ServiceInstance]], None]):
        self._cache = cache
        self._callback = callback

    def cancel(self) -> None:
        self._cache.unsubscribe(self._callback)

    def close(self) -> None:
        self.cancel()


class _ServiceCache:
    """The live instances of one service, kept current by a WatchLoop."""

    def __init__(self, client: EtcdClient, name: str) -> None:
        self.name = name
        self.prefix = f"{SERVICE_ROOT}{name}/"
        self._client = client
        self._instances: dict[str, ServiceInstance] = {}
        self._sorted: list[ServiceInstance] = []
        self._subscribers: list[Callable[[list[ServiceInstance]], None]] = []
        self._lock = threading.RLock()
        self._loop: WatchLoop | None = None
        self.loaded = threading.Event()

    def load(self) -> int:
        """Read every instance now; returns the revision read at."""
        result = self._client.range(self.prefix, prefix=True)
        with self._lock:
            self._instances = {}
            for kv in result.kvs:
                self._put(kv.key, kv.value)
            self._publish()
        self.loaded.set()
        return result.revision

    def _put(self, key: str, value: bytes) -> None:
        try:
            self._instances[key] = ServiceInstance.from_json(value)
        except (ValueError, KeyError, TypeError):
            _log.warning("ignoring malformed service entry", key=key)

    def start(self, revision: int | None) -> None:
        self._loop = WatchLoop(
            self._client,
            self.prefix,
            prefix=True,
            on_events=self._on_events,
            resync=self.load,
            name=f"services:{self.name}",
            start_revision=revision,
        ).start()

    def _on_events(self, events: list[WatchEvent]) -> None:
        with self._lock:
            for ev in events:
                if ev.kind == "put":
                    self._put(ev.kv.key, ev.kv.value)
                else:
                    self._instances.pop(ev.kv.key, None)
            self._publish()

    def _publish(self) -> None:
        self._sorted = sorted(self._instances.values(), key=lambda i: i.id)
        snapshot = list(self._sorted)
        for callback in list(self._subscribers):
            try:
                callback(snapshot)
            except Exception:
                _log.exception("service watch callback failed", service_name=self.name)

    def instances(self) -> list[ServiceInstance]:
        return list(self._sorted)

    def subscribe(self, callback: Callable[[list[ServiceInstance]], None]) -> None:
        with self._lock:
            self._subscribers.append(callback)
            if self.loaded.is_set():
                callback(list(self._sorted))

    def unsubscribe(self, callback: Callable[[list[ServiceInstance]], None]) -> None:
        with self._lock:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

    def close(self) -> None:
        if self._loop is not None:
            self._loop.stop()


class EtcdRegistry(Closing):
    """The etcd-backed :class:`~im_infra.coord.ServiceRegistry` (closed by its provider; also a
    context manager)."""

    def __init__(self, client: EtcdClient, keeper: LeaseKeeper) -> None:
        self._client = client
        self._keeper = keeper
        self._registrations: dict[str, _Registration] = {}
        self._caches: dict[str, _ServiceCache] = {}
        self._rr: dict[str, itertools.count[int]] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()

    # ------------------------------------------------------------------ registration
    def register(self, instance: ServiceInstance, *, ttl: int = DEFAULT_REGISTRATION_TTL) -> None:
        """Publish ``instance`` under a lease of ``ttl`` seconds, kept alive in the background.

        If the lease is ever lost, the instance is registered again automatically as soon as
        etcd answers (logged). Registering the same (name, id) again replaces the entry.
        Raises :class:`CoordUnavailable` if etcd does not answer now.
        """
        _check("name", instance.name)
        _check("id", instance.id)
        if ttl < 1:
            raise ConfigError(f"registration ttl must be >= 1 second, got {ttl}")
        reg = _Registration(instance, ttl)
        with self._lock:
            old = self._registrations.pop(reg.key, None)
        if old is not None:
            self._stop(old, delete=False)
        self._publish(reg)
        with self._lock:
            self._registrations[reg.key] = reg
        _metrics.registered()
        _log.info(
            "registered", service_name=instance.name, id=instance.id, address=instance.address
        )

    def _publish(self, reg: _Registration) -> None:
        lease = self._keeper.grant(reg.ttl, purpose="registration")
        try:
            self._client.put(reg.key, reg.instance.to_json(), lease=lease.id)
        except BaseException:
            lease.revoke()
            raise
        reg.lease = lease
        lease.on_lost(lambda _lease: self._on_lost(reg))

    def _on_lost(self, reg: _Registration) -> None:
        if not reg.active or self._closed.is_set():
            return
        _log.warning(
            "registration lease lost; will register again when etcd answers",
            service_name=reg.instance.name,
            id=reg.instance.id,
        )
        threading.Thread(
            target=self._reregister, args=(reg,), name="im-infra-coord-reregister", daemon=True
        ).start()

    def _reregister(self, reg: _Registration) -> None:
        delay = 0.2
        while reg.active and not self._closed.is_set():
            try:
                self._publish(reg)
            except CoordError as exc:
                _log.debug("re-registration failed, retrying", cause=str(exc))
                if reg.stop.wait(delay):
                    return
                delay = min(delay * 2, 2.0)
                continue
            if not reg.active:  # deregistered meanwhile: undo
                if reg.lease is not None:
                    reg.lease.revoke()
                return
            _metrics.reregistered()
            _log.info(
                "re-registered after lease loss", service_name=reg.instance.name, id=reg.instance.id
            )
            return

    def deregister(self, instance: ServiceInstance | str, instance_id: str | None = None) -> bool:
        """Remove a registration made here: ``deregister(instance)`` or ``deregister(name, id)``.
        Returns False if it was not registered through this registry. When etcd is unreachable
        the entry disappears by itself when its lease expires (a warning is logged)."""
        if isinstance(instance, ServiceInstance):
            key = service_key(instance.name, instance.id)
        else:
            if instance_id is None:
                raise ConfigError("deregister(name, id) needs the instance id")
            key = service_key(instance, instance_id)
        with self._lock:
            reg = self._registrations.pop(key, None)
        if reg is None:
            return False
        self._stop(reg, delete=True)
        _log.info("deregistered", service_name=reg.instance.name, id=reg.instance.id)
        return True

    def _stop(self, reg: _Registration, *, delete: bool) -> None:
        reg.active = False
        reg.stop.set()
        if delete:
            _metrics.deregistered()
        lease = reg.lease
        if lease is not None and lease.active:
            lease.revoke()  # deletes the key with it
            return
        if delete:  # the lease was lost (a re-registration may be pending): delete the key
            try:
                self._client.delete(reg.key)
            except CoordUnavailable as exc:
                _log.warning(
                    "etcd unreachable while deregistering; the entry expires with its lease",
                    key=reg.key,
                    cause=str(exc),
                )

    # ------------------------------------------------------------------ discovery
    def _cache(self, name: str, *, wait_for_etcd: bool) -> _ServiceCache:
        _check("name", name)
        with self._lock:
            if self._closed.is_set():
                raise CoordError("the registry is closed")
            cache = self._caches.get(name)
            if cache is not None:
                return cache
            cache = _ServiceCache(self._client, name)
            try:
                revision: int | None = cache.load()
            except CoordUnavailable:
                if wait_for_etcd:
                    raise
                revision = None  # the watch loop loads it once etcd answers
            cache.start(revision)
            self._caches[name] = cache
            return cache

    def discover(self, name: str) -> list[ServiceInstance]:
        """The live instances of ``name`` (sorted by id), from a local cache kept current by a
        watch: only the first call for a name reads etcd. While etcd is unreachable the last
        known list is served; if it was never read, :class:`CoordUnavailable` is raised."""
        cache = self._caches.get(name)  # fast path: no lock once the cache exists
        if cache is not None and cache.loaded.is_set():
            return cache.instances()
        cache = self._cache(name, wait_for_etcd=True)
        if not cache.loaded.wait(self._client.timeout):  # made by watch() while etcd was down
            raise CoordUnavailable(
                f"instances of {name!r} not known yet: etcd has not answered since watch()"
            )
        return cache.instances()

    def watch(self, name: str, callback: Callable[[list[ServiceInstance]], None]) -> WatchHandle:
        """Call ``callback(instances)`` with the full current list now (if known) and after every
        change, from a background thread. Works even if etcd is down at the time of the call."""
        cache = self._cache(name, wait_for_etcd=False)
        cache.subscribe(callback)
        return WatchHandle(cache, callback)

    def pick(self, name: str) -> ServiceInstance:
        """The next instance of ``name`` in round-robin order; :class:`NoInstanceAvailable` if
        there is none."""
        instances = self.discover(name)
        if not instances:
            raise NoInstanceAvailable(f"no live instance of service {name!r}")
        with self._lock:
            counter = self._rr.setdefault(name, itertools.count())
            index = next(counter)
        return instances[index % len(instances)]

    def registered(self) -> list[ServiceInstance]:
        """The instances registered through this registry."""
        with self._lock:
            return [r.instance for r in self._registrations.values()]

    def close(self) -> None:
        """Deregister everything registered here and stop the discovery watches (idempotent)."""
        if self._closed.is_set():
            return
        with self._lock:
            regs = list(self._registrations.values())
            self._registrations.clear()
            caches = list(self._caches.values())
            self._caches.clear()
        for reg in regs:
            self._stop(reg, delete=True)
        self._closed.set()
        for cache in caches:
            cache.close()
