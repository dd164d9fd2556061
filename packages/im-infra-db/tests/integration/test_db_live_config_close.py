"""Closing a provider ends its live db.yaml subscription at once (not at garbage collection)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from im_infra import coord, db

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("flavor", ["sync", "async"])
def test_close_ends_the_live_config_subscription(
    etcd_endpoints: str, unique: str, tmp_path: Path, flavor: str
) -> None:
    database = str(tmp_path / "live.db")
    with coord.connect(etcd_endpoints, service=f"{unique}-svc", env=unique, timeout=3) as cp:
        if flavor == "sync":
            p = db.new(coord=cp, driver="sqlite", database=database)
            assert len(cp.config._live) == 1 and cp.config._hub.watching
            p.close()
        else:
            ap = db.new_async(coord=cp, driver="sqlite", database=database)
            assert len(cp.config._live) == 1 and cp.config._hub.watching
            asyncio.run(ap.close())
        # the provider is still referenced: only close() can have ended the subscription
        assert cp.config._live == [] and not cp.config._hub.watching
