"""The lease keeper without a server: when a lease counts as lost, from which instant, and that
the loss is reported once. Most tests drive ``LeaseKeeper._refresh`` with a fake clock (no
threads); the others use the real threads with short TTLs and bounded waits."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from im_infra.coord import CoordError, CoordUnavailable
from im_infra.coord._internal.lease import LOSS_FRACTION, REFRESH_FRACTION, KeptLease, LeaseKeeper


class FakeClock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakeLeaseClient:
    """Answers keepalives from a script: a TTL, or an exception to raise. ``latency`` seconds of
    the fake clock pass between sending a request and its answer."""

    timeout = 0.1

    def __init__(
        self, answers: list[Any], clock: FakeClock | None = None, latency: float = 0.0
    ) -> None:
        self.answers = answers
        self.clock = clock
        self.latency = latency
        self.revoked: list[int] = []
        self.keepalives = 0

    def _wait(self) -> None:
        if self.clock is not None:
            self.clock.now += self.latency

    def lease_grant(self, ttl: int, *, timeout: float | None = None) -> tuple[int, int]:
        self._wait()
        return 42, ttl

    def lease_keepalive_once(self, lease_id: int, *, timeout: float | None = None) -> int:
        self.keepalives += 1
        self._wait()
        answer = self.answers.pop(0) if self.answers else 0
        if isinstance(answer, Exception):
            raise answer
        return int(answer)

    def lease_revoke(self, lease_id: int, *, timeout: float | None = None) -> None:
        self.revoked.append(lease_id)


def test_the_fractions() -> None:
    assert pytest.approx(1 / 3) == REFRESH_FRACTION
    assert pytest.approx(2 / 3) == LOSS_FRACTION
    assert REFRESH_FRACTION < LOSS_FRACTION < 1  # a second refresh before the loss, then margin


def tracked(answers: list[Any], *, ttl: int = 9, latency: float = 0.0) -> Any:
    """A lease granted (sent) at t=100 with ``ttl``, tracked by a keeper whose threads are not
    started: the test calls ``_refresh`` itself."""
    clock = FakeClock(100.0)
    fake = FakeLeaseClient(answers, clock, latency)
    keeper = LeaseKeeper(fake, clock=clock)  # type: ignore[arg-type]
    lease = KeptLease(keeper, 42, ttl, sent=clock())
    keeper._leases.add(lease)
    lost: list[KeptLease] = []
    lease.on_lost(lost.append)
    return clock, fake, keeper, lease, lost


def due_times(keeper: LeaseKeeper) -> list[float]:
    return sorted(due for due, _, _ in keeper._heap)


def test_grant_deadline_runs_from_the_send_time() -> None:
    clock = FakeClock(100.0)
    fake = FakeLeaseClient([], clock, latency=1.0)  # the grant's answer arrives at t=101
    keeper = LeaseKeeper(fake, clock=clock)  # type: ignore[arg-type]
    lease = keeper.grant(9)
    try:
        assert lease.last_ok == 100.0
        assert lease.deadline == pytest.approx(106.0)  # 100 + 9 * 2/3, not 101 + 9
        assert due_times(keeper) == [pytest.approx(103.0)]  # first refresh at TTL/3
    finally:
        keeper.close()


def test_lost_exactly_at_the_deadline_and_reported_once() -> None:
    clock, fake, keeper, lease, lost = tracked([])
    clock.now = lease.deadline - 1e-6
    assert not lease.lost
    assert lease.active
    clock.now = lease.deadline
    assert lease.lost  # for readers at once, whatever the keeper threads are doing
    assert not lease.active
    assert lost == []  # the callbacks come from the keeper
    keeper._refresh(lease)
    assert fake.keepalives == 0  # too late to refresh: reported lost instead
    assert lost == [lease]
    assert lease.wait_lost(0)
    keeper._refresh(lease)
    lease.revoke()
    assert lost == [lease]
    assert lease not in keeper._leases
    # revoked once, by the keeper's revoker (a lost lease may still live in etcd)
    wait_until(lambda: fake.revoked == [42] and keeper.pending_revocations == [])
    keeper.close()


def test_renewal_counts_from_the_send_time_of_the_keepalive() -> None:
    clock, _, keeper, lease, lost = tracked([9], latency=1.5)
    clock.now = 103.0
    keeper._refresh(lease)  # sent at 103, answered at 104.5
    assert lease.last_ok == 103.0
    assert lease.deadline == pytest.approx(109.0)  # 103 + 6, not 104.5 + 6
    assert due_times(keeper) == [pytest.approx(106.0)]  # next refresh 103 + 3
    clock.now = 109.0
    assert lease.lost
    assert lost == []


def test_answer_after_the_deadline_does_not_revive_the_lease() -> None:
    clock, fake, keeper, lease, lost = tracked([9], latency=0.7)
    clock.now = 105.5  # before the deadline (106); etcd answers at 106.2
    keeper._refresh(lease)
    assert fake.keepalives == 1
    assert lost == [lease]
    assert lease.lost
    assert lease.deadline == pytest.approx(106.0)
    assert keeper._heap == []


def test_failed_keepalives_are_retried_until_the_deadline() -> None:
    clock, _, keeper, lease, lost = tracked([CoordUnavailable("down")] * 3, latency=0.1)
    clock.now = 103.0
    keeper._refresh(lease)
    assert lost == []
    (retry,) = due_times(keeper)
    assert 103.1 < retry <= 103.6  # soon, well before the deadline
    keeper._heap.clear()
    clock.now = 105.85
    keeper._refresh(lease)  # fails at 105.95: still 0.05 s to go
    assert lost == []
    assert due_times(keeper)[0] <= 106.05
    keeper._heap.clear()
    clock.now = 105.95
    keeper._refresh(lease)  # fails at 106.05: past the deadline
    assert lost == [lease]
    assert keeper._heap == []


def test_revoke_past_the_deadline_reports_the_loss() -> None:
    clock, fake, _, lease, lost = tracked([])
    clock.now = lease.deadline + 0.1
    lease.revoke()
    assert lost == [lease]
    assert lease.lost
    wait_until(lambda: fake.revoked == [42])  # the lost lease is still revoked in etcd


def wait_until(check: Any, timeout: float = 10) -> None:
    done = threading.Event()
    deadline = threading.Timer(timeout, done.set)
    deadline.start()
    try:
        while not check():
            assert not done.wait(0.01), "not within the time limit"
    finally:
        deadline.cancel()


class FlakyRevokeClient(FakeLeaseClient):
    """Revocations fail (etcd unreachable) until ``up`` is set."""

    def __init__(self, answers: list[Any]) -> None:
        super().__init__(answers)
        self.up = threading.Event()
        self.attempts = 0

    def lease_revoke(self, lease_id: int, *, timeout: float | None = None) -> None:
        self.attempts += 1
        if not self.up.is_set():
            raise CoordUnavailable("etcd lease revoke: no endpoint answered")
        super().lease_revoke(lease_id, timeout=timeout)


def test_a_lease_lost_while_etcd_is_away_is_revoked_once_etcd_answers() -> None:
    """etcd restarts the TTL of every lease when it comes back: a lease given up by its
    deadline must be revoked then, or its keys block others for another whole TTL."""
    fake = FlakyRevokeClient([CoordUnavailable("down")] * 1000)
    keeper = LeaseKeeper(fake)  # type: ignore[arg-type]
    try:
        lease = keeper.grant(1)
        assert lease.wait_lost(10)
        wait_until(lambda: fake.attempts >= 3)  # retried while etcd is away
        assert fake.revoked == []
        assert keeper.pending_revocations == [42]
        fake.up.set()
        wait_until(lambda: fake.revoked == [42])
        assert keeper.pending_revocations == []
        attempts = fake.attempts
    finally:
        keeper.close()
    assert fake.attempts == attempts  # confirmed: not revoked again


def test_pending_revocations_are_tried_again_at_shutdown() -> None:
    fake = FlakyRevokeClient([CoordUnavailable("down")] * 1000)
    keeper = LeaseKeeper(fake)  # type: ignore[arg-type]
    try:
        assert keeper.grant(1).wait_lost(10)
        fake.up.set()
        keeper.revoke_all()
        assert 42 in fake.revoked
        assert keeper.pending_revocations == []
    finally:
        keeper.close()


def test_keeper_reports_a_lease_etcd_no_longer_has() -> None:
    fake = FakeLeaseClient([1, 1, 0])
    keeper = LeaseKeeper(fake)  # type: ignore[arg-type]
    lost = threading.Event()
    got: list[KeptLease] = []
    lease = keeper.grant(1)

    def on_lost(lz: KeptLease) -> None:
        got.append(lz)
        lost.set()

    lease.on_lost(on_lost)
    assert lost.wait(10)
    assert got == [lease]
    assert lease.lost
    assert not lease.active
    lease.revoke()  # nothing to revoke any more
    assert fake.revoked == []
    keeper.close()


def test_keeper_gives_up_without_a_successful_keepalive() -> None:
    fake = FakeLeaseClient([CoordUnavailable("down")] * 1000)
    keeper = LeaseKeeper(fake)  # type: ignore[arg-type]
    lease = keeper.grant(1)
    assert lease.wait_lost(10)
    assert lease.lost
    keeper.close()


class BlockedLeaseClient(FakeLeaseClient):
    """Every keepalive hangs until ``unblock`` is set (a call stuck far beyond its timeout)."""

    def __init__(self) -> None:
        super().__init__([])
        self.unblock = threading.Event()
        self.calling = threading.Event()

    def lease_keepalive_once(self, lease_id: int, *, timeout: float | None = None) -> int:
        self.calling.set()
        self.unblock.wait(30)
        return 1


def test_watchdog_reports_the_loss_while_a_keepalive_hangs() -> None:
    fake = BlockedLeaseClient()
    keeper = LeaseKeeper(fake)  # type: ignore[arg-type]
    lease = keeper.grant(1)
    try:
        assert fake.calling.wait(10)
        assert lease.wait_lost(10)  # reported while the keepalive thread is still blocked
        assert not fake.unblock.is_set()
    finally:
        fake.unblock.set()
        keeper.close()
    assert lease.lost  # the late success did not revive it


def test_revoked_lease_is_not_refreshed_or_reported() -> None:
    fake = FakeLeaseClient([1] * 1000)
    keeper = LeaseKeeper(fake)  # type: ignore[arg-type]
    lease = keeper.grant(1)
    lease.on_lost(lambda _lz: pytest.fail("a revoked lease must not be reported lost"))
    lease.revoke()
    lease.revoke()
    assert fake.revoked == [42]
    assert not lease.active
    assert not lease.lost
    keeper.close()
    with pytest.raises(CoordError, match="closed"):
        keeper.grant(1)


class RefusingRevokeClient(FakeLeaseClient):
    def lease_revoke(self, lease_id: int, *, timeout: float | None = None) -> None:
        self.revoked.append(lease_id)
        raise CoordError("etcd refused lease revoke: permission denied")


def test_a_refused_revocation_is_not_retried_forever() -> None:
    fake = RefusingRevokeClient([CoordUnavailable("down")] * 1000)
    keeper = LeaseKeeper(fake)  # type: ignore[arg-type]
    try:
        assert keeper.grant(1).wait_lost(10)
        wait_until(lambda: fake.revoked == [42] and keeper.pending_revocations == [])
        threading.Event().wait(0.5)
        assert fake.revoked == [42]
    finally:
        keeper.close()


def test_a_revocation_that_fails_while_etcd_is_away_is_retried() -> None:
    fake = FlakyRevokeClient([1] * 1000)
    keeper = LeaseKeeper(fake)  # type: ignore[arg-type]
    try:
        lease = keeper.grant(5)
        lease.revoke()  # etcd unreachable right now
        assert fake.revoked == []
        assert keeper.pending_revocations == [42]
        assert not lease.lost  # revoked on purpose, not lost
        fake.up.set()
        wait_until(lambda: fake.revoked == [42] and keeper.pending_revocations == [])
    finally:
        keeper.close()
