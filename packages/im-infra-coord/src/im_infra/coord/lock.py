"""Distributed locks on etcd (the etcd ``concurrency.Mutex`` recipe, with sessions).

Each acquisition writes a fresh key ``/im-infra/lock/{name}/{lease-id}-{n}`` bound to the
locker's session lease for that TTL (one lease per TTL, shared by every lock of the locker, as in
etcd's ``concurrency.Session``). The key with the lowest create revision holds the lock; every
other contender waits for the deletion of the key created just before its own (no thundering
herd, first come first served). An uncontended acquire is one transaction and a release one
delete. The session lease is kept alive while locks are held, so holding longer than the TTL is
fine; if the holder dies its keys go when the lease expires. If the lease is lost while held,
the lock is marked lost, ``on_lost`` callbacks run, and ``release()``/``check()``/leaving the
``with`` block raise :class:`LockLost`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import math
import threading
import time
from collections.abc import Callable

from im_infra.clog.lifecycle import Closing
from im_infra.coord._internal import metrics as _metrics
from im_infra.coord._internal.etcd import EtcdClient
from im_infra.coord._internal.lease import KeptLease, LeaseKeeper
from im_infra.coord._internal.log import log
from im_infra.coord._internal.model import Compare, GetOp, PutOp
from im_infra.coord.errors import ConfigError, CoordError, LockLost, LockTimeout

LOCK_ROOT = "/im-infra/lock/"
DEFAULT_LOCK_TTL = 10.0
_WAIT_SLICE = 0.5  # a waiter re-checks lease loss and cancellation at least this often

_log = log.named("lock")


class DistributedLock:
    """A held lock. Release it with :meth:`release` or use it as a (async) context manager."""

    def __init__(self, locker: EtcdLocker, name: str, key: str, lease: KeptLease, revision: int):
        self.name = name
        self.key = key
        self.revision = revision
        self._locker = locker
        self._lease = lease
        self._released = False
        self._notified = False  # the lease's loss was reported to this lock's callbacks
        self._guard = threading.Lock()
        self._callbacks: list[Callable[[DistributedLock], None]] = []
        lease.on_lost(self._lost)  # runs at once if the loss was already reported

    @property
    def held(self) -> bool:
        """True while the lock is held: not released and its lease not lost."""
        return not self._released and not self._lease.lost

    @property
    def lost(self) -> bool:
        """True if the lease was lost while the lock was held."""
        return self._lease.lost

    def check(self) -> None:
        """Raise :class:`LockLost` if the lock's lease was lost (call it in long critical
        sections before doing something that needs the lock)."""
        if self._lease.lost:
            raise LockLost(f"lock {self.name!r} was lost: its lease expired while held")

    def on_lost(self, callback: Callable[[DistributedLock], None]) -> None:
        """Call ``callback(lock)`` from a background thread if the lock is lost while held."""
        with self._guard:
            self._callbacks.append(callback)
            run_now = self._notified and not self._released
        if run_now:
            callback(self)

    def _lost(self, _lease: KeptLease) -> None:
        with self._guard:
            if self._released or self._notified:
                return
            self._notified = True
            callbacks = list(self._callbacks)
        _log.error("lock lost while held", lock=self.name)
        for callback in callbacks:
            try:
                callback(self)
            except Exception:
                _log.exception("lock on_lost callback failed", lock=self.name)

    def release(self) -> None:
        """Release the lock (idempotent). Raises :class:`LockLost` (once) if the lease had been
        lost while held, since the critical section was then not protected."""
        with self._guard:
            if self._released:
                return
            self._released = True
        self._locker._forget(self)
        self._lease.remove_on_lost(self._lost)
        lost = self._lease.lost
        try:
            self._locker._delete(self.key)
        except CoordError as exc:
            if not lost:
                # The session lease keeps the key alive for as long as the locker lives: retire
                # the session so that its lease is revoked (once etcd answers again, and no
                # other held lock needs it), which deletes the key.
                _log.warning(
                    "could not delete the lock key; it goes with the session lease",
                    lock=self.name,
                    cause=str(exc),
                )
                self._locker._retire(self._lease)
        if lost:
            raise LockLost(f"lock {self.name!r} was lost while held: its lease expired")

    async def release_async(self) -> None:
        """:meth:`release` without blocking the event loop."""
        await asyncio.to_thread(self.release)

    def __enter__(self) -> DistributedLock:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        try:
            self.release()
        except LockLost:
            if exc_type is None:
                raise

    async def __aenter__(self) -> DistributedLock:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        try:
            await self.release_async()
        except LockLost:
            if exc_type is None:
                raise

    def __repr__(self) -> str:
        return f"DistributedLock(name={self.name!r}, held={self.held})"


class EtcdLocker(Closing):
    """The etcd-backed :class:`~im_infra.coord.Locker` (closed by its provider; also a context
    manager)."""

    def __init__(self, client: EtcdClient, keeper: LeaseKeeper) -> None:
        self._client = client
        self._keeper = keeper
        self._held: set[DistributedLock] = set()
        self._sessions: dict[int, KeptLease] = {}
        self._retiring: set[KeptLease] = set()
        self._seq = itertools.count()
        self._guard = threading.Lock()

    def _session(self, ttl: int) -> KeptLease:
        """The live session lease for ``ttl`` (a new one after a loss)."""
        with self._guard:
            lease = self._sessions.get(ttl)
            if lease is None or not lease.active:
                lease = self._sessions[ttl] = self._keeper.grant(ttl, purpose="lock")
            return lease

    def _delete(self, key: str) -> None:
        self._client.delete(key, timeout=min(self._client.timeout, 2.0))

    def _retire(self, lease: KeptLease) -> None:
        """Stop using ``lease`` for new locks; revoke it once no held lock needs it."""
        with self._guard:
            for ttl, current in list(self._sessions.items()):
                if current is lease:
                    del self._sessions[ttl]
            self._retiring.add(lease)
        self._revoke_retired()

    def _revoke_retired(self) -> None:
        with self._guard:
            in_use = {lock._lease for lock in self._held}
            idle = [lease for lease in self._retiring if lease not in in_use]
            self._retiring.difference_update(idle)
        for lease in idle:
            lease.revoke()

    def acquire(
        self, name: str, *, ttl: float = DEFAULT_LOCK_TTL, timeout: float | None = None
    ) -> DistributedLock:
        """Block until the lock ``name`` is held (or ``timeout`` seconds passed:
        :class:`LockTimeout`). ``ttl``: seconds the lock survives its holder's death (a float,
        as cache's locks; etcd leases count whole seconds, so it is rounded up)."""
        lock = self._acquire(name, ttl, timeout, wait=True, cancel=None)
        assert lock is not None
        return lock

    def try_acquire(self, name: str, *, ttl: float = DEFAULT_LOCK_TTL) -> DistributedLock | None:
        """Take the lock if it is free right now, else return None (never waits)."""
        return self._acquire(name, ttl, None, wait=False, cancel=None)

    async def acquire_async(
        self, name: str, *, ttl: float = DEFAULT_LOCK_TTL, timeout: float | None = None
    ) -> DistributedLock:
        """:meth:`acquire` for asyncio; cancelling the awaiting task abandons the attempt (a lock
        obtained meanwhile is released)."""
        lock = await _in_thread(lambda cancel: self._acquire(name, ttl, timeout, True, cancel))
        assert lock is not None
        return lock

    async def try_acquire_async(
        self, name: str, *, ttl: float = DEFAULT_LOCK_TTL
    ) -> DistributedLock | None:
        """:meth:`try_acquire` for asyncio."""
        return await _in_thread(lambda cancel: self._acquire(name, ttl, None, False, cancel))

    def _acquire(
        self,
        name: str,
        ttl: float,
        timeout: float | None,
        wait: bool,
        cancel: threading.Event | None,
    ) -> DistributedLock | None:
        if not name or name.startswith("/"):
            raise ConfigError(f"invalid lock name {name!r}")
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not ttl >= 1:
            raise ConfigError(f"lock ttl must be a number of seconds >= 1, got {ttl!r}")
        start = time.monotonic()
        outcome: _metrics.LockOutcome = "error"
        try:
            lock = self._contend(name, math.ceil(ttl), start, timeout, wait, cancel)
            outcome = "acquired" if lock is not None else "busy"
            return lock
        except LockTimeout:
            outcome = "timeout"
            raise
        except LockLost:
            outcome = "lost"
            raise
        finally:
            _metrics.lock_waited(time.monotonic() - start, outcome)

    def _contend(
        self,
        name: str,
        ttl: int,
        start: float,
        timeout: float | None,
        wait: bool,
        cancel: threading.Event | None,
    ) -> DistributedLock | None:
        deadline = None if timeout is None else start + timeout
        prefix = f"{LOCK_ROOT}{name}/"
        lease = self._session(ttl)
        key = f"{prefix}{lease.id:x}-{next(self._seq)}"
        try:
            # Create our key and read the current owner in one round trip.
            result = self._client.txn(
                [Compare(key, "create", "==", 0)],
                [PutOp(key, b"", lease.id), GetOp(prefix, first_created=True)],
                [GetOp(key)],
            )
            if result.succeeded:
                my_revision = result.revision
                owner = result.responses[1]
                if isinstance(owner, list) and owner and owner[0].key == key:
                    return self._granted(name, key, lease, my_revision)
                if not wait:  # someone created a key before ours: the lock is taken
                    self._delete(key)
                    return None
            else:  # our own put, retried after a timeout
                existing = result.responses[0]
                assert isinstance(existing, list) and existing
                my_revision = existing[0].create_revision
            while True:
                if lease.lost:
                    raise LockLost(f"lock {name!r}: lease lost while waiting for the lock")
                if cancel is not None and cancel.is_set():
                    raise CoordError(f"lock {name!r}: acquisition cancelled")
                ahead = self._client.range(
                    prefix,
                    prefix=True,
                    sort_target="create",
                    descending=True,
                    limit=1,
                    max_create_revision=my_revision - 1,
                )
                if not ahead.kvs:
                    return self._granted(name, key, lease, my_revision)
                if not wait:
                    self._delete(key)
                    return None
                slice_ = _WAIT_SLICE
                if deadline is not None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise LockTimeout(f"lock {name!r} not acquired within {timeout:g}s")
                    slice_ = min(slice_, remaining)
                self._wait_deleted(ahead.kvs[0].key, ahead.revision + 1, slice_)
        except BaseException:
            # Give up our place in the queue. The key may exist even if the transaction seemed
            # to fail (applied, answer lost); if it cannot be deleted now, the session is retired
            # so that its lease (and the key) goes away instead of blocking the queue.
            try:
                self._delete(key)
            except CoordError:
                self._retire(lease)
            raise

    def _granted(self, name: str, key: str, lease: KeptLease, revision: int) -> DistributedLock:
        held = DistributedLock(self, name, key, lease, revision)
        with self._guard:
            self._held.add(held)
        return held

    def _wait_deleted(self, key: str, start_revision: int, timeout: float) -> None:
        """Return when ``key`` is deleted, or after ``timeout`` (the caller re-checks)."""
        try:
            stream = self._client.open_watch(
                key, prefix=False, start_revision=start_revision, timeout=timeout
            )
        except CoordError:
            time.sleep(min(timeout, 0.1))
            return
        try:
            for resp in stream.responses():
                if any(ev.kind == "delete" for ev in resp.events) or resp.canceled:
                    return
        except CoordError:
            return  # timed out or broken: the caller re-checks
        finally:
            stream.cancel()

    def _forget(self, lock: DistributedLock) -> None:
        with self._guard:
            self._held.discard(lock)
            retiring = bool(self._retiring)
        if retiring:
            self._revoke_retired()

    def close(self) -> None:
        """Release every lock still held through this locker and revoke its session leases
        (idempotent)."""
        with self._guard:
            held = list(self._held)
            sessions = list(self._sessions.values()) + list(self._retiring)
            self._sessions.clear()
            self._retiring.clear()
        for lock in held:
            with contextlib.suppress(LockLost):
                lock.release()
        for lease in sessions:
            lease.revoke()


async def _in_thread(
    fn: Callable[[threading.Event], DistributedLock | None],
) -> DistributedLock | None:
    """Run a blocking acquisition on a daemon thread (not the loop's bounded executor, where
    waiters could starve each other); on cancellation stop it and release what it got."""
    cancel = threading.Event()
    future: concurrent.futures.Future[DistributedLock | None] = concurrent.futures.Future()
    future.set_running_or_notify_cancel()  # so asyncio's cancel cannot cancel it under us

    def run() -> None:
        try:
            future.set_result(fn(cancel))
        except BaseException as exc:
            future.set_exception(exc)

    threading.Thread(target=run, name="im-infra-coord-lock", daemon=True).start()
    try:
        return await asyncio.wrap_future(future)
    except asyncio.CancelledError:
        cancel.set()

        def cleanup(done: concurrent.futures.Future[DistributedLock | None]) -> None:
            if not done.cancelled() and done.exception() is None:
                lock = done.result()
                if lock is not None:
                    with contextlib.suppress(CoordError):
                        lock.release()

        future.add_done_callback(cleanup)
        raise
