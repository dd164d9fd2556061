"""Leases kept alive by background threads, one pair per Provider (pyetcd has no keepalive loop).

Each lease is refreshed every ``ttl * REFRESH_FRACTION`` (TTL/3). It is declared lost when etcd
answers that it no longer exists (TTL 0), or when ``ttl * LOSS_FRACTION`` (2/3 of the TTL) has
passed since the *send* time of the last successful keepalive (or of the grant) without a newer
success.

Why the send time and why 2/3: etcd's expiry clock for a lease restarts when the server handles
the keepalive (or the grant), which happens somewhere between our send and the arrival of the
answer. The send time is therefore a lower bound of the server's refresh, so ``send + ttl`` is the
earliest instant etcd can expire the lease and delete its keys; measuring from the arrival of the
answer (as etcd's Go client does) can overrun it by a whole round trip, retries included. Even
``send + ttl`` would leave no room for what happens after we decide: noticing the loss (a thread
that is late to run), the holder acting on it (a uid generator stops issuing IDs, a lock holder
stops writing), clock-rate differences between this process and the etcd leader. Declaring the
lease lost at ``send + ttl * 2/3`` keeps a third of the TTL as that safety margin, while leaving
one more refresh attempt (at 1/3) plus retries before giving up: a single slow or failed
keepalive does not lose the lease, two missed periods do.

The loss is exact for readers: :attr:`KeptLease.lost` turns True at the deadline (computed from
the clock, whatever the threads are doing). Lost callbacks are delivered by a watchdog thread,
separate from the thread that sends keepalives (which may be blocked in a slow call), as soon as
the deadline passes; they must be quick (hand long work to another thread). A keepalive answer
arriving after the deadline does not revive the lease: once lost, always lost.

A lease lost by its deadline (etcd unreachable, or too slow) may still exist in etcd, and etcd
restarts the TTL of every lease when it comes back (a restart or a new leader), so its keys (a
lock's key, an instance ID) would block everyone for another whole TTL. The keeper therefore
revokes every such lost lease as soon as etcd answers again, from a third thread that retries
until etcd confirms (revoked, or not found) or the keeper is closed.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable

from im_infra.coord._internal import metrics as _metrics
from im_infra.coord._internal.etcd import EtcdClient
from im_infra.coord._internal.log import log
from im_infra.coord.errors import CoordError, CoordUnavailable

REFRESH_FRACTION = 1 / 3
"""A keepalive is sent this fraction of the TTL after the send time of the last successful one."""
LOSS_FRACTION = 2 / 3
"""A lease is lost this fraction of the TTL after the send time of the last successful keepalive
(or grant) if no newer keepalive succeeded; the rest of the TTL is the safety margin."""

_log = log.named("lease")

_REVOKE_RETRY_MIN = 0.1
_REVOKE_RETRY_MAX = 1.0
_REVOKE_TIMEOUT = 1.0

Clock = Callable[[], float]


class KeptLease:
    """A lease that the keeper refreshes until ``revoke()`` or until it is lost.

    ``last_ok`` is the (monotonic) send time of the last successful grant or keepalive and
    ``deadline`` the instant the lease counts as lost without a newer success. ``purpose``
    ("registration", "lock", "instance_id") labels the lease-loss metric.
    """

    def __init__(
        self, keeper: LeaseKeeper, lease_id: int, ttl: int, sent: float, purpose: str = "other"
    ) -> None:
        self.id = lease_id
        self.ttl = ttl
        self.purpose = purpose
        self.last_ok = sent
        self._deadline = sent + ttl * LOSS_FRACTION
        self._keeper = keeper
        self._clock = keeper.clock
        self._callbacks: list[Callable[[KeptLease], None]] = []
        self._lost = threading.Event()
        self._done = False  # lost (and reported) or revoked
        self._state = threading.Lock()

    @property
    def deadline(self) -> float:
        """When the lease counts as lost unless a keepalive sent before then succeeds first."""
        return self._deadline

    @property
    def lost(self) -> bool:
        """True once the lease is known or presumed expired (exact: from the deadline on, even
        before the lost callbacks ran)."""
        return self._lost.is_set() or (not self._done and self._clock() >= self._deadline)

    @property
    def active(self) -> bool:
        """True while the keeper refreshes the lease (neither lost nor revoked)."""
        return not self._done and self._clock() < self._deadline

    def on_lost(self, callback: Callable[[KeptLease], None]) -> None:
        """Call ``callback(lease)`` from the keeper when the lease is lost (at once if it was
        already reported lost). Called at most once per registration."""
        with self._state:
            reported = self._lost.is_set()
            if not reported:
                self._callbacks.append(callback)
        if reported:
            callback(self)

    def remove_on_lost(self, callback: Callable[[KeptLease], None]) -> None:
        """Forget a callback given to :meth:`on_lost` (no-op if unknown)."""
        with self._state:
            if callback in self._callbacks:
                self._callbacks.remove(callback)

    def wait_lost(self, timeout: float | None = None) -> bool:
        """Wait until the lease was reported lost (its callbacks ran); False on timeout."""
        return self._lost.wait(timeout)

    def revoke(self, timeout: float | None = None) -> None:
        """Stop refreshing and revoke the lease now (its keys go). Idempotent. When etcd is
        unreachable the keeper revokes it once etcd answers again (until the keeper is closed;
        after that it expires by itself within its TTL). A lease already past its deadline is
        reported lost instead (and revoked the same way)."""
        with self._state:
            if self._done:
                return
            expired = self._clock() >= self._deadline
            if not expired:
                self._done = True
        if expired:
            self._mark_lost(self._overdue_reason())  # also revokes it once etcd answers
            return
        self._keeper._forget(self)
        try:
            self._keeper.client.lease_revoke(
                self.id,
                timeout=timeout if timeout is not None else min(self._keeper.client.timeout, 2.0),
            )
        except CoordUnavailable as exc:
            _log.warning(
                "could not revoke lease now; revoking it once etcd answers",
                lease=self.id,
                cause=str(exc),
            )
            self._keeper._revoke_when_reachable(self.id)
        except CoordError as exc:
            _log.warning(
                "could not revoke lease; it expires by itself", lease=self.id, cause=str(exc)
            )

    def _renewed(self, sent: float, ttl: int, now: float) -> bool:
        """Record a keepalive sent at ``sent`` that etcd answered (at ``now``) with ``ttl``.

        Extends the deadline to ``sent + ttl * LOSS_FRACTION`` if the answer came before the
        current deadline; otherwise the lease is (reported) lost. Returns whether it still lives.
        """
        with self._state:
            if self._done:
                return False
            if now < self._deadline:
                self.ttl = ttl
                self.last_ok = max(self.last_ok, sent)
                self._deadline = self.last_ok + ttl * LOSS_FRACTION
                return True
        self._mark_lost(self._overdue_reason() + "; a late keepalive answer does not revive it")
        return False

    def _overdue_reason(self) -> str:
        return f"no keepalive succeeded within {LOSS_FRACTION:.2f} of its {self.ttl}s TTL"

    def _mark_lost(
        self, reason: str, *, now: float | None = None, gone_in_etcd: bool = False
    ) -> bool:
        """Report the lease lost and run the callbacks; with ``now``, only if ``now`` is past the
        deadline. Unless etcd said it is gone (``gone_in_etcd``), it is revoked once etcd
        answers. Returns True if the lease is finished (lost, now or before, or revoked)."""
        with self._state:
            if self._done:
                return True
            if now is not None and now < self._deadline:
                return False
            self._done = True
            self._lost.set()
            callbacks = list(self._callbacks)
        self._keeper._forget(self)
        if not gone_in_etcd:
            self._keeper._revoke_when_reachable(self.id)
        _log.warning("lease lost", lease=self.id, ttl=self.ttl, purpose=self.purpose, reason=reason)
        _metrics.lease_lost(self.purpose)
        for callback in callbacks:
            try:
                callback(self)
            except Exception:
                _log.exception("lease-lost callback failed", lease=self.id)
        return True


class LeaseKeeper:
    """Refreshes every KeptLease of a client: a keepalive thread sends the refreshes, a watchdog
    thread reports leases lost at their deadline even while a keepalive call is blocked."""

    def __init__(self, client: EtcdClient, *, clock: Clock = time.monotonic) -> None:
        self.client = client
        self.clock = clock
        self._heap: list[tuple[float, int, KeptLease]] = []  # refreshes due
        self._leases: set[KeptLease] = set()  # watched deadlines
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._stopped = False
        self._threads: list[threading.Thread] = []
        # lost leases to revoke once etcd answers: lease id -> (next attempt, retry pause)
        self._to_revoke: dict[int, tuple[float, float]] = {}
        self._revoker: threading.Thread | None = None

    def grant(self, ttl: int, *, timeout: float | None = None, purpose: str = "other") -> KeptLease:
        """Grant a lease of ``ttl`` seconds (>= 1) and keep it alive from now on; ``purpose``
        labels it in the lease-loss metric."""
        if ttl < 1:
            raise ValueError(f"lease ttl must be >= 1 second, got {ttl}")
        with self._cond:
            if self._stopped:
                raise CoordError("the coord provider is closed")
        sent = self.clock()  # etcd starts the lease's TTL after this
        lease_id, granted = self.client.lease_grant(ttl, timeout=timeout)
        lease = KeptLease(self, lease_id, granted or ttl, sent, purpose)
        with self._cond:
            if self._stopped:
                raise CoordError("the coord provider is closed")
            self._leases.add(lease)
            heapq.heappush(
                self._heap, (sent + lease.ttl * REFRESH_FRACTION, next(self._seq), lease)
            )
            if not self._threads:
                self._threads = [
                    threading.Thread(target=target, name=name, daemon=True)
                    for target, name in (
                        (self._run, "im-infra-coord-keepalive"),
                        (self._watchdog, "im-infra-coord-lease-watchdog"),
                    )
                ]
                for thread in self._threads:
                    thread.start()
            self._cond.notify_all()
        return lease

    def _forget(self, lease: KeptLease) -> None:
        with self._cond:
            self._leases.discard(lease)
            self._heap = [item for item in self._heap if item[2] is not lease]
            heapq.heapify(self._heap)
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped:
                    now = self.clock()
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
                now = self.clock()
                if not lease._mark_lost(lease._overdue_reason(), now=now):
                    self._reschedule(lease, now + 0.2)

    def _watchdog(self) -> None:
        while True:
            with self._cond:
                while not self._stopped:
                    now = self.clock()
                    overdue = [lease for lease in self._leases if lease.deadline <= now]
                    if overdue:
                        break
                    soonest = min((lease.deadline for lease in self._leases), default=None)
                    self._cond.wait(None if soonest is None else soonest - now)
                if self._stopped:
                    return
            for lease in overdue:
                # A success recorded meanwhile moved the deadline: then nothing happens.
                if lease._mark_lost(lease._overdue_reason(), now=now):
                    self._forget(lease)  # also when it was revoked just now

    def _refresh(self, lease: KeptLease) -> None:
        sent = self.clock()
        if lease._mark_lost(lease._overdue_reason(), now=sent):
            return  # revoked, or past the deadline: lost
        timeout = min(self.client.timeout, lease.ttl * REFRESH_FRACTION, lease.deadline - sent)
        try:
            ttl = self.client.lease_keepalive_once(lease.id, timeout=max(0.05, timeout))
        except CoordError as exc:
            now = self.clock()
            if lease._mark_lost(f"{lease._overdue_reason()} ({exc})", now=now):
                return
            _log.debug("keepalive failed, retrying", lease=lease.id, cause=str(exc))
            remaining = lease.deadline - now
            self._reschedule(lease, now + min(0.5, max(0.05, remaining / 4)))
            return
        if ttl <= 0:
            lease._mark_lost("etcd reports the lease expired or revoked", gone_in_etcd=True)
            return
        if lease._renewed(sent, ttl, self.clock()):
            self._reschedule(lease, sent + ttl * REFRESH_FRACTION)

    def _reschedule(self, lease: KeptLease, due: float) -> None:
        with self._cond:
            if not self._stopped and lease in self._leases:
                heapq.heappush(self._heap, (due, next(self._seq), lease))
                self._cond.notify_all()

    def _revoke_when_reachable(self, lease_id: int) -> None:
        """Queue a lost lease for revocation (retried until etcd confirms it)."""
        with self._cond:
            if self._stopped:
                return
            self._to_revoke[lease_id] = (self.clock(), _REVOKE_RETRY_MIN)
            if self._revoker is None:
                self._revoker = threading.Thread(
                    target=self._revoke_lost, name="im-infra-coord-lease-revoker", daemon=True
                )
                self._revoker.start()
            self._cond.notify_all()

    @property
    def pending_revocations(self) -> list[int]:
        """IDs of lost leases not yet confirmed revoked by etcd."""
        with self._cond:
            return list(self._to_revoke)

    def _revoke_lost(self) -> None:
        while True:
            with self._cond:
                while not self._stopped:
                    now = self.clock()
                    due = [i for i, (at, _) in self._to_revoke.items() if at <= now]
                    if due:
                        break
                    soonest = min((at for at, _ in self._to_revoke.values()), default=None)
                    self._cond.wait(None if soonest is None else soonest - now)
                if self._stopped:
                    return
            for lease_id in due:
                self._try_revoke(lease_id)

    def _try_revoke(self, lease_id: int) -> bool:
        """One attempt to revoke a lost lease; True (and forgotten) once etcd confirmed."""
        try:
            self.client.lease_revoke(lease_id, timeout=min(self.client.timeout, _REVOKE_TIMEOUT))
        except CoordUnavailable as exc:  # etcd still away: again later
            with self._cond:
                entry = self._to_revoke.get(lease_id)
                if entry is not None:
                    pause = entry[1]
                    self._to_revoke[lease_id] = (
                        self.clock() + pause,
                        min(pause * 2, _REVOKE_RETRY_MAX),
                    )
            _log.debug("lost lease not revoked yet", lease=lease_id, cause=str(exc))
            return False
        except Exception as exc:  # etcd answered with a refusal (auth, closed client): give up
            with self._cond:
                self._to_revoke.pop(lease_id, None)
            _log.warning(
                "could not revoke a lost lease; it expires by itself",
                lease=lease_id,
                cause=str(exc),
            )
            return False
        with self._cond:
            self._to_revoke.pop(lease_id, None)
        _log.info("lost lease revoked in etcd (its keys are gone)", lease=lease_id)
        return True

    def revoke_all(self) -> None:
        """Revoke every lease still kept alive (their keys go now), and try once more the lost
        leases not revoked yet. For shutdown: owners revoke their own leases first; this
        catches any left (e.g. granted directly on the keeper)."""
        with self._cond:
            leases = list(self._leases)
            lost = list(self._to_revoke)
        for lease in leases:
            lease.revoke()
        for lease_id in lost:
            if not self._try_revoke(lease_id) and lease_id in self.pending_revocations:
                break  # etcd is away: do not spend a timeout on each of the others

    def close(self) -> None:
        """Stop the keeper threads (leases are not revoked here: :meth:`revoke_all` does)."""
        with self._cond:
            self._stopped = True
            self._heap.clear()
            self._leases.clear()
            self._to_revoke.clear()
            self._cond.notify_all()
            threads = list(self._threads)
            if self._revoker is not None:
                threads.append(self._revoker)
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(timeout=self.client.timeout + 1)
