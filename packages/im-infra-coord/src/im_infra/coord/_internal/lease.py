"""Leases kept alive by one background thread per Provider (pyetcd has no keepalive loop).

Each lease is refreshed every TTL/3. A lease is declared lost when etcd answers that it no longer
exists (TTL 0), or when no refresh has succeeded for a whole TTL (etcd down, network cut): by then
etcd may have expired it and deleted its keys, so holders must stop relying on it. Lost callbacks
run on the keeper thread; they must be quick (hand long work to another thread).
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import threading
import time
from collections.abc import Callable

from im_infra.coord._internal.etcd import EtcdClient
from im_infra.coord._internal.log import log
from im_infra.coord.errors import CoordError

_log = log.named("lease")


class KeptLease:
    """A lease that the keeper refreshes until ``revoke()`` or until it is lost."""

    def __init__(self, keeper: LeaseKeeper, lease_id: int, ttl: int) -> None:
        self.id = lease_id
        self.ttl = ttl
        self._keeper = keeper
        self._callbacks: list[Callable[[KeptLease], None]] = []
        self._lost = threading.Event()
        self._done = False
        self._state = threading.Lock()
        self.last_ok = time.monotonic()

    @property
    def lost(self) -> bool:
        """True once the lease is known or presumed expired."""
        return self._lost.is_set()

    @property
    def active(self) -> bool:
        """True while the keeper refreshes the lease (neither lost nor revoked)."""
        return not self._done

    def on_lost(self, callback: Callable[[KeptLease], None]) -> None:
        """Call ``callback(lease)`` from the keeper thread when the lease is lost."""
        self._callbacks.append(callback)
        if self._lost.is_set():
            callback(self)

    def remove_on_lost(self, callback: Callable[[KeptLease], None]) -> None:
        """Forget a callback given to :meth:`on_lost` (no-op if unknown)."""
        with contextlib.suppress(ValueError):
            self._callbacks.remove(callback)

    def wait_lost(self, timeout: float | None = None) -> bool:
        return self._lost.wait(timeout)

    def revoke(self, timeout: float | None = None) -> None:
        """Stop refreshing and revoke the lease now (its keys go). Idempotent; best effort when
        etcd is unreachable (the lease then expires by itself within its TTL)."""
        with self._state:
            if self._done:
                return
            self._done = True
        self._keeper._forget(self)
        try:
            self._keeper.client.lease_revoke(
                self.id,
                timeout=timeout if timeout is not None else min(self._keeper.client.timeout, 2.0),
            )
        except CoordError as exc:
            _log.warning(
                "could not revoke lease; it expires by itself", lease=self.id, cause=str(exc)
            )

    def _mark_lost(self, reason: str) -> None:
        with self._state:
            if self._done:
                return
            self._done = True
            self._lost.set()
        _log.warning("lease lost", lease=self.id, ttl=self.ttl, reason=reason)
        for callback in list(self._callbacks):
            try:
                callback(self)
            except Exception:
                _log.exception("lease-lost callback failed", lease=self.id)


class LeaseKeeper:
    """One daemon thread that refreshes every KeptLease of a client."""

    def __init__(self, client: EtcdClient) -> None:
        self.client = client
        self._heap: list[tuple[float, int, KeptLease]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._stopped = False
        self._thread: threading.Thread | None = None

    def grant(self, ttl: int, *, timeout: float | None = None) -> KeptLease:
        """Grant a lease of ``ttl`` seconds (>= 1) and keep it alive from now on."""
        if ttl < 1:
            raise ValueError(f"lease ttl must be >= 1 second, got {ttl}")
        lease_id, granted = self.client.lease_grant(ttl, timeout=timeout)
        lease = KeptLease(self, lease_id, granted or ttl)
        self._schedule(lease, time.monotonic() + lease.ttl / 3)
        return lease

    def _schedule(self, lease: KeptLease, due: float) -> None:
        with self._cond:
            if self._stopped:
                raise CoordError("the coord provider is closed")
            heapq.heappush(self._heap, (due, next(self._seq), lease))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="im-infra-coord-keepalive", daemon=True
                )
                self._thread.start()
            self._cond.notify()

    def _forget(self, lease: KeptLease) -> None:
        with self._cond:
            self._heap = [item for item in self._heap if item[2] is not lease]
            heapq.heapify(self._heap)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped:
                    now = time.monotonic()
                    if self._heap and self._heap[0][0] <= now:
                        _, _, lease = heapq.heappop(self._heap)
                        break
                    wait = self._heap[0][0] - now if self._heap else None
                    self._cond.wait(wait)
                if self._stopped:
                    return
            try:
                self._refresh(lease)
            except Exception:  # never let one bad refresh end the thread every lease needs
                _log.exception("lease keepalive failed unexpectedly", lease=lease.id)
                if time.monotonic() - lease.last_ok >= lease.ttl:
                    lease._mark_lost(f"no successful keepalive for {lease.ttl}s")
                else:
                    self._reschedule(lease, time.monotonic() + 0.2)

    def _refresh(self, lease: KeptLease) -> None:
        if not lease.active:
            return
        started = time.monotonic()
        remaining = lease.ttl - (started - lease.last_ok)
        try:
            ttl = self.client.lease_keepalive_once(
                lease.id, timeout=max(0.2, min(self.client.timeout, lease.ttl / 3))
            )
        except CoordError as exc:
            now = time.monotonic()
            if now - lease.last_ok >= lease.ttl:
                lease._mark_lost(f"no successful keepalive for {lease.ttl}s ({exc})")
                return
            _log.debug("keepalive failed, retrying", lease=lease.id, cause=str(exc))
            self._reschedule(lease, now + min(0.5, max(0.05, remaining / 4)))
            return
        if ttl <= 0:
            lease._mark_lost("etcd reports the lease expired or revoked")
            return
        lease.last_ok = started
        lease.ttl = ttl
        self._reschedule(lease, started + ttl / 3)

    def _reschedule(self, lease: KeptLease, due: float) -> None:
        if not lease.active:
            return
        with self._cond:
            if not self._stopped:
                heapq.heappush(self._heap, (due, next(self._seq), lease))

    def close(self) -> None:
        """Stop the keeper thread (leases are not revoked here: their owners do that first)."""
        with self._cond:
            self._stopped = True
            self._heap.clear()
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=self.client.timeout + 1)
