"""coord.InstanceLease (what uid's generator holds its worker ID with), on MemoryEtcd and etcd."""

from __future__ import annotations

import pytest

from im_infra import coord

from .test_coord_contract import Connect, connect, name, wait_for

__all__ = ["connect"]  # the fixture, shared with the contract tests

pytestmark = pytest.mark.integration


def test_lease_lost_is_reported_once_and_late_callbacks_run_at_once(connect: Connect) -> None:
    a, b = connect(), connect()
    inst = a.instance_for(name(), max_id=1, ttl=1)
    lease = coord.InstanceLease.hold(inst)
    assert lease.id == inst.current_id
    assert lease.held
    lost: list[int] = []
    lease.on_lost(lost.append)
    b.client.lease_revoke(inst._lease.id)  # type: ignore[union-attr]  # as after a partition
    wait_for(lambda: lost == [lease.id], timeout=6, what="loss reported")
    assert not lease.held
    late: list[int] = []
    lease.on_lost(late.append)
    assert late == [lease.id]  # already lost: called at once
    assert lost == [lease.id]  # and only once


@pytest.mark.parametrize("max_id", [0, 3])
def test_release_gives_the_id_back_but_never_a_newer_one(connect: Connect, max_id: int) -> None:
    inst = connect().instance_for(name(), max_id=max_id, ttl=2)
    lease = coord.InstanceLease.hold(inst)
    inst.release()  # behind the lease's back (provider.close() does this)
    assert not lease.held
    newer = coord.InstanceLease.hold(inst)  # the instancer allocates again
    assert newer.held
    # with max_id=0 the new allocation has the old number: still not the old lease's
    assert not lease.held
    lease.release()  # the old lease must not release the newer ID
    assert inst.current_id == newer.id
    assert newer.held
    newer.release()
    newer.release()  # idempotent
    assert inst.current_id is None
    assert not newer.held


def test_hold_reports_coord_errors(connect: Connect) -> None:
    svc = name()
    first = connect()
    coord.InstanceLease.hold(first.instance_for(svc, max_id=0))
    with pytest.raises(coord.InstanceIdExhausted):
        coord.InstanceLease.hold(connect().instance_for(svc, max_id=0))
