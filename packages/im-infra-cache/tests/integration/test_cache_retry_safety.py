"""Issue #15 item 1 (and the lock part of item 8): after a timeout only commands that are safe to
repeat are retried. Through a proxy that holds Redis' replies for a 1.2 s latency spike
(readTimeout 1 s) the request reaches the real Redis at once and runs; only the reply is late,
and a retry sent at 1 s runs once the spike is over. Blocking and asyncio."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from im_infra import cache
from im_infra_testsupport.faultproxy import FaultProxy

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SPIKE = 1.2
SLOW = {
    "read_timeout": 1.0,
    "connect_timeout": 1.0,
    "retry": {"max_retries": 2, "min_backoff": 0.01, "max_backoff": 0.05},
}


@pytest.fixture
def slow(make_cache: Any, proxy: FaultProxy) -> Any:
    """A cache whose connection to the real Redis goes through ``proxy``."""
    c = make_cache(address=proxy.address, **SLOW)
    c.ping()  # connected before the spike: the request, not the handshake, meets it
    return c


def _server_value(raw: redis.Redis, c: Any, key: str) -> bytes | str | None:
    return raw.get(c.key_prefix + key)


def test_incr_runs_once_and_reports_outcome_unknown(
    slow: Any, proxy: FaultProxy, raw: redis.Redis
) -> None:
    proxy.spike(SPIKE)
    with pytest.raises(cache.CacheOutcomeUnknown) as info:
        slow.incr("counter")
    assert info.value.timed_out
    assert "outcome unknown" in str(info.value)
    assert isinstance(info.value, cache.CacheUnavailable)
    assert _server_value(raw, slow, "counter") == b"1"  # ran exactly once, not retried


@pytest.mark.parametrize(
    ("name", "call"),
    [
        ("lpush", lambda c: c.lpush("list", "x")),
        ("setnx", lambda c: c.setnx("nx", "v")),
        ("hincr", lambda c: c.hincrby("h", "f", 1)),
        ("pipeline", lambda c: c.pipeline().incr("p").execute()),
    ],
)
def test_other_unsafe_writes_are_not_retried(
    slow: Any, proxy: FaultProxy, raw: redis.Redis, name: str, call: Any
) -> None:
    proxy.spike(SPIKE)
    with pytest.raises(cache.CacheOutcomeUnknown):
        call(slow)
    prefix = slow.key_prefix
    if name == "lpush":
        assert raw.llen(prefix + "list") == 1
    elif name == "setnx":
        assert raw.get(prefix + "nx") is not None
    elif name == "hincr":
        assert raw.hget(prefix + "h", "f") == b"1"
    else:
        assert raw.get(prefix + "p") == b"1"


def test_safe_commands_are_retried_and_succeed(
    slow: Any, proxy: FaultProxy, raw: redis.Redis
) -> None:
    """A plain SET and a GET time out once (1.2 s > 1 s) and succeed on the retry."""
    proxy.spike(SPIKE)
    assert slow.set("plain", "v") is True
    assert raw.get(slow.key_prefix + "plain") == b"v"
    proxy.spike(SPIKE)
    assert slow.get("plain") == "v"


def test_safe_command_on_a_slow_redis_is_a_plain_timeout(slow: Any, proxy: FaultProxy) -> None:
    proxy.spike(10)
    with pytest.raises(cache.CacheTimeout) as info:
        slow.get("k")
    assert not isinstance(info.value, cache.CacheOutcomeUnknown)
    assert isinstance(info.value, TimeoutError)


def test_lock_acquire_on_a_slow_redis_raises_the_lock_timeout(slow: Any, proxy: FaultProxy) -> None:
    proxy.spike(10)
    with pytest.raises(cache.LockTimeout) as info:
        slow.lock("l", ttl=5).acquire(timeout=0.5)
    assert isinstance(info.value, TimeoutError)


def test_lock_whose_set_ran_but_reply_was_late_is_held(
    make_cache: Any, slow: Any, proxy: FaultProxy
) -> None:
    """The SET NX ran (reply late): the lock checks the key and reports it taken, instead of
    polling a lock it holds itself until the timeout."""
    lock = slow.lock("held", ttl=30)
    proxy.spike(SPIKE)
    lock.acquire(timeout=10)
    assert lock.owned()
    lock.release()


def test_keys_and_values_not_encodable_as_utf8_are_argument_errors(cc: Any) -> None:
    """Item 8: a lone surrogate in a key or a text value (raw UnicodeEncodeError before)."""
    with pytest.raises(cache.CacheArgumentError, match="the key is not encodable"):
        cc.get("\ud800")
    with pytest.raises(cache.CacheArgumentError, match="argument 2 is not encodable"):
        cc.set("k", "\udfff")
    with pytest.raises(cache.CacheArgumentError, match="not encodable"):
        cc.pipeline().set("k", "v").get("\ud800").execute()
    with pytest.raises(cache.CacheArgumentError, match="value is None"):
        cc.set("k", None)
    assert cc.set("k", "v") is True  # the connection is still usable
    assert cc.get("k") == "v"
