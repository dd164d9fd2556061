"""uid.from_coord against a fake coord Provider/Instancer (the contract in the shared brief)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, cast

import pytest

from im_infra import coord, uid
from im_infra.coord.errors import CoordUnavailable, InstanceIdExhausted


class FakeInstancer:
    """Implements coord's Instancer contract: instance_id / on_lost / release."""

    def __init__(
        self,
        instance_id: int,
        *,
        error: Exception | None = None,
        lose_during_get: bool = False,
    ) -> None:
        self.number = instance_id
        self.error = error
        self.lose_during_get = lose_during_get
        self.callbacks: list[Callable[[int], None]] = []
        self.released = 0

    def instance_id(self) -> int:
        if self.error is not None:
            raise self.error
        if self.lose_during_get:
            self.lose()
        return self.number

    def on_lost(self, callback: Callable[[int], None]) -> None:
        self.callbacks.append(callback)

    def release(self) -> None:
        self.released += 1

    def lose(self) -> None:
        """What coord's keepalive thread does when the lease is gone."""
        for callback in self.callbacks:
            callback(self.number)


class FakeProvider:
    def __init__(self, instancer: FakeInstancer) -> None:
        self.instancer = instancer
        self.requests: list[tuple[str, int]] = []

    def instance_for(self, service: str, *, max_id: int = 1023) -> FakeInstancer:
        self.requests.append((service, max_id))
        return self.instancer


def as_provider(instancer: FakeInstancer) -> coord.Provider:
    """A FakeProvider where a coord.Provider is expected (it has what from_coord uses)."""
    return cast("coord.Provider", FakeProvider(instancer))


def test_worker_id_comes_from_coord() -> None:
    provider = FakeProvider(FakeInstancer(42))
    gen = uid.from_coord(cast("coord.Provider", provider), "im-logic")
    assert gen.worker_id == 42
    assert uid.parse(gen.next_id()).worker == 42
    assert provider.requests == [("im-logic", 1023)]
    assert isinstance(gen, uid.Generator)


def test_lost_worker_id_stops_generation_with_a_clear_error() -> None:
    instancer = FakeInstancer(7)
    gen = uid.from_coord(as_provider(instancer), "im-logic")
    before = gen.next_ids(100)
    instancer.lose()
    with pytest.raises(uid.WorkerIdLost, match="worker ID 7 was lost in coord") as info:
        gen.next_id()
    assert isinstance(info.value, uid.UIDError)
    with pytest.raises(uid.WorkerIdLost):
        gen.next_ids(10)
    assert "WorkerIdLost" in repr(gen)
    assert before  # IDs issued before the loss stay valid


def test_loss_reported_before_the_generator_exists_still_stops_it() -> None:
    gen = uid.from_coord(as_provider(FakeInstancer(8, lose_during_get=True)), "im-logic")
    with pytest.raises(uid.WorkerIdLost):
        gen.next_id()


def test_loss_stops_a_batch_in_progress(interrupt: Callable[..., Any]) -> None:
    instancer = FakeInstancer(9)
    gen = uid.from_coord(as_provider(instancer), "im-logic")
    # lose() runs in another thread than the batch, like coord's keepalive thread
    assert interrupt(gen.next_ids, instancer.lose) == [uid.WorkerIdLost]


@pytest.mark.parametrize(
    "error", [CoordUnavailable("no etcd endpoint answered"), InstanceIdExhausted("all 1024 held")]
)
def test_coord_failure_is_translated(error: Exception) -> None:
    with pytest.raises(uid.WorkerIdUnavailable, match="im-logic") as info:
        uid.from_coord(as_provider(FakeInstancer(1, error=error)), "im-logic")
    assert info.value.__cause__ is error


def test_out_of_range_worker_from_coord_is_rejected() -> None:
    with pytest.raises(uid.InvalidWorkerId, match=r"0\.\.1023"):
        uid.from_coord(as_provider(FakeInstancer(5000)), "im-logic")


def test_bad_service_name() -> None:
    with pytest.raises(uid.InvalidArgument, match="service"):
        uid.from_coord(as_provider(FakeInstancer(1)), "")


def test_close_keeps_the_id_by_default() -> None:
    instancer = FakeInstancer(3)
    with uid.from_coord(as_provider(instancer), "im-logic") as gen:
        gen.next_id()
    assert gen.closed
    assert instancer.released == 0
    instancer.lose()  # a loss after close changes nothing
    with pytest.raises(uid.GeneratorClosed):
        gen.next_id()


def test_release_on_close() -> None:
    instancer = FakeInstancer(3)
    gen = uid.from_coord(as_provider(instancer), "im-logic", release_on_close=True)
    gen.close()
    gen.close()
    assert instancer.released == 1


def test_options_are_passed_through() -> None:
    ticks = iter(range(1_700_000_000 * 10**9, 1_800_000_000 * 10**9, 1000))
    gen = uid.from_coord(
        as_provider(FakeInstancer(4)),
        "im-logic",
        epoch_ms=1_600_000_000_000,
        clock=lambda: next(ticks),
        max_backward_ms=9,
    )
    assert (gen.epoch_ms, gen.max_backward_ms) == (1_600_000_000_000, 9)
    assert gen.parse(gen.next_id()).timestamp_ms == 1_700_000_000_000


class TrackingInstancer(FakeInstancer):
    """Like coord.EtcdInstancer: ``current_id`` is None once the ID is released or lost."""

    def __init__(self, instance_id: int) -> None:
        super().__init__(instance_id)
        self.held = True

    @property
    def current_id(self) -> int | None:
        return self.number if self.held else None

    def release(self) -> None:
        super().release()
        self.held = False  # coord does not call on_lost for a release


def test_id_released_behind_the_generators_back_stops_it(fake_clock: Any) -> None:
    instancer = TrackingInstancer(11)
    gen = uid.from_coord(as_provider(instancer), "im-logic", clock=fake_clock)
    gen.next_id()
    instancer.release()  # e.g. provider.close() while the generator is still in use
    fake_clock.set_ms(fake_clock.ms + 1)
    with pytest.raises(uid.WorkerIdLost, match="released"):
        gen.next_id()


def test_from_coord_on_memory_etcd_stops_when_coord_expires_the_lease(fake_clock: Any) -> None:
    from im_infra.coord.testing import MemoryEtcd

    etcd = MemoryEtcd()
    with etcd.connect(service="im-logic") as p:
        gen = uid.from_coord(coord=p, clock=fake_clock)
        assert gen.worker_id == p.instance_for("im-logic", max_id=uid.MAX_WORKER_ID).current_id
        gen.next_id()
        assert etcd.expire_leases() >= 1
        deadline = time.monotonic() + 10  # the keepalive thread notices within a few seconds

        def ids_until_stopped() -> None:
            while time.monotonic() < deadline:
                fake_clock.set_ms(fake_clock.ms + 1)  # each new millisecond asks the lease
                gen.next_id()
                time.sleep(0.02)

        with pytest.raises(uid.WorkerIdLost):
            ids_until_stopped()


def test_generator_refuses_a_lease_of_another_id() -> None:
    from im_infra.coord.testing import memory_provider

    with memory_provider(service="im-logic") as p:
        lease = coord.InstanceLease.hold(p.instance_for("im-logic", max_id=uid.MAX_WORKER_ID))
        with pytest.raises(uid.InvalidArgument, match=f"lease holds instance ID {lease.id}"):
            uid.SnowflakeGenerator((lease.id + 1) % 1024, lease=lease)


@pytest.mark.parametrize(
    ("old", "new"), [("InstancerLike", "Instancer"), ("ProviderLike", "Provider")]
)
def test_redeclared_protocols_are_deprecated_aliases_of_coords(old: str, new: str) -> None:
    from im_infra.uid import coordinated

    for module in (uid, coordinated):
        with pytest.warns(DeprecationWarning, match=f"use im_infra.coord.{new}"):
            assert getattr(module, old) is getattr(coord, new)
    with pytest.raises(AttributeError):
        uid.NoSuchName  # noqa: B018
