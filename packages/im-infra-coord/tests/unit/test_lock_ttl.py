"""Lock TTLs are float seconds, as cache's (docs/naming.md); etcd leases round them up."""

from __future__ import annotations

import pytest

from im_infra import coord
from im_infra.coord.testing import MemoryEtcd


def test_a_float_ttl_is_accepted_and_rounded_up_to_whole_lease_seconds() -> None:
    etcd = MemoryEtcd()
    with etcd.connect(service="s") as p:
        with p.lock.acquire("float-ttl", ttl=1.5, timeout=5) as lock:
            assert lock.held
            assert p.lock.try_acquire("float-ttl", ttl=2.0) is None
        again = p.lock.try_acquire("float-ttl", ttl=2)
        assert again is not None
        again.release()


@pytest.mark.parametrize("ttl", [0.5, 0, -1, float("nan"), True, "10"])
def test_a_ttl_below_one_second_or_not_a_number_is_a_config_error(ttl: object) -> None:
    etcd = MemoryEtcd()
    with etcd.connect(service="s") as p, pytest.raises(coord.ConfigError, match="lock ttl"):
        p.lock.try_acquire("bad-ttl", ttl=ttl)  # type: ignore[arg-type]
