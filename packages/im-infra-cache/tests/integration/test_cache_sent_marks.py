"""Whether the command was sent, decided on the real Redis through a proxy that cuts a connection
right after forwarding a chosen request: cut after the command was written, an unsafe write is
not retried (outcome unknown, it ran once); cut during the connection's handshake, the command
was never written and is retried (it runs once and succeeds). Blocking and asyncio."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from im_infra import cache
from im_infra_testsupport.faultproxy import FaultProxy

pytestmark = pytest.mark.integration

RETRY = {"retry": {"max_retries": 2, "min_backoff": 0.01, "max_backoff": 0.05}}


def test_cut_after_the_command_was_written_is_not_retried(
    make_cache: Any, proxy: FaultProxy, raw: redis.Redis
) -> None:
    c = make_cache(address=proxy.address, **RETRY)
    c.ping()
    proxy.cut_after(lambda data: b"INCRBY" in data.upper())
    with pytest.raises(cache.CacheOutcomeUnknown) as info:
        c.incr("counter")
    assert not info.value.timed_out
    assert proxy.cuts == 1
    assert raw.get(c.key_prefix + "counter") == b"1"  # ran once, not sent again


def test_cut_during_the_handshake_is_retried(
    make_cache: Any, proxy: FaultProxy, raw: redis.Redis
) -> None:
    c = make_cache(address=proxy.address, client_name="im-infra-sent-test", **RETRY)
    proxy.cut_after(lambda data: b"SETNAME" in data.upper())  # the first connection's handshake
    assert c.incr("counter") == 1  # retried on a new connection: the INCRBY was never written
    assert proxy.cuts == 1
    assert raw.get(c.key_prefix + "counter") == b"1"
