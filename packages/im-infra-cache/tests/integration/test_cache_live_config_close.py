"""Closing a cache ends its live config subscription at once (not at garbage collection)."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from im_infra import cache, coord

from .conftest import address_of

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("flavor", ["sync", "async"])
def test_close_ends_the_live_config_subscription(
    etcd_endpoints: str, redis_url: str, flavor: str
) -> None:
    unique = f"it-cache-live-{uuid.uuid4().hex[:8]}"
    with coord.connect(etcd_endpoints, service=f"{unique}-svc", env=unique, timeout=3) as cp:
        if flavor == "sync":
            c: cache.Cache | cache.AsyncCache = cache.new(coord=cp, **address_of(redis_url))
        else:
            c = cache.new_async(coord=cp, **address_of(redis_url))
        assert len(cp.config._live) == 1 and cp.config._hub.watching
        result = c.close()
        if flavor == "async":
            asyncio.run(result)  # type: ignore[arg-type]
        # c is still referenced: only close() can have ended the subscription
        assert cp.config._live == [] and not cp.config._hub.watching
        assert c is not None
