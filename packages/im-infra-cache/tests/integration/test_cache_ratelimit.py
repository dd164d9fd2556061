"""Rate limiters against the real Redis: limits hold under 8 concurrent clients (each its own
connection pool), NOSCRIPT recovery, retry-after, named limits from config, and every
configured fallback while Redis is down."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import redis

from im_infra import cache

from .conftest import address_of, unique_service

pytestmark = pytest.mark.integration

DOWN = {
    "address": "127.0.0.1:1",
    "connect_timeout": 0.3,
    "read_timeout": 0.3,
    "retry": {"max_retries": 0, "min_backoff": 0.01, "max_backoff": 0.02},
}


def hammer(
    redis_url: str, spec: cache.SlidingWindow | cache.TokenBucket, seconds: float
) -> tuple[list[tuple[float, float]], int]:
    """8 clients (own cache each) call allow() on one key for ``seconds``: the (sent, received)
    monotonic times of every admitted call, and the number of refused calls."""
    service = unique_service("rl")
    clients = [cache.new(service, **address_of(redis_url)) for _ in range(8)]
    name = f"send-{time.time_ns()}"
    admitted: list[tuple[float, float]] = []
    refused = 0
    lock = threading.Lock()
    start = threading.Barrier(8)

    def client(c: Any) -> None:
        nonlocal refused
        limiter = c.limiter(name, spec)
        start.wait()
        end = time.monotonic() + seconds
        while (sent := time.monotonic()) < end:
            result = limiter.allow("user:1")
            got = time.monotonic()
            with lock:
                if result.allowed:
                    admitted.append((sent, got))
                else:
                    refused += 1
                    assert result.retry_after > 0

    threads = [threading.Thread(target=client, args=(c,)) for c in clients]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        clients[0].limiter(name, spec).reset("user:1")
        for c in clients:
            c.close()
    return admitted, refused


def test_sliding_window_never_admits_more_than_the_limit_in_a_window(redis_url: str) -> None:
    spec = cache.SlidingWindow(limit=40, window=0.5)
    admitted, refused = hammer(redis_url, spec, 2.2)
    assert refused > 0 and len(admitted) >= 40 * 4  # the limit was reached, window after window
    # calls whose whole round trip fell inside [t, t + window) were admitted by the server
    # inside that window: never more than the limit of them
    admitted.sort()
    for i, (first_sent, _) in enumerate(admitted):
        inside = sum(
            1 for sent, got in admitted[i:] if sent >= first_sent and got < first_sent + spec.window
        )
        assert inside <= spec.limit, (inside, i)
    # and over the whole run, no more than one full limit per window started
    span = max(g for _, g in admitted) - min(s for s, _ in admitted)
    assert len(admitted) <= spec.limit * (span / spec.window + 1)


def test_token_bucket_admits_burst_plus_rate(redis_url: str) -> None:
    spec = cache.TokenBucket(rate=50, burst=20)
    admitted, refused = hammer(redis_url, spec, 2.0)
    assert refused > 0
    span = max(g for _, g in admitted) - min(s for s, _ in admitted)
    assert len(admitted) <= spec.burst + spec.rate * span + 1
    assert len(admitted) >= spec.burst + spec.rate * (span - 0.5)  # and not far below it


def test_results_say_remaining_and_retry_after(make_cache: Any) -> None:
    c = make_cache()
    window = c.limiter("login", cache.SlidingWindow(limit=3, window=2))
    assert [window.allow("u1").remaining for _ in range(3)] == [2, 1, 0]
    refused = window.allow("u1")
    assert not refused and refused.remaining == 0 and refused.fallback is None
    assert 1.5 < refused.retry_after <= 2.0
    assert window.allow("u2").allowed  # keys are independent
    bucket = c.limiter("send", cache.TokenBucket(rate=10, burst=2))
    assert bucket.allow("u1", cost=2).remaining == 0
    denied = bucket.allow("u1")
    assert not denied.allowed and 0 < denied.retry_after <= 0.11
    time.sleep(0.25)
    assert bucket.allow("u1").allowed  # refilled
    with pytest.raises(cache.CacheError, match="cost"):
        bucket.allow("u1", cost=3)
    with pytest.raises(cache.CacheError, match="cost"):
        bucket.allow("u1", cost=0)


def test_named_limits_come_from_config(make_cache: Any) -> None:
    c = make_cache(
        rate_limit={"limits": {"send": {"algorithm": "sliding_window", "limit": 2, "window": 5}}}
    )
    send = c.limiter("send")
    assert [send.allow("u").allowed for _ in range(3)] == [True, True, False]
    assert send.allow("u").limit == 2
    with pytest.raises(cache.CacheConfigError, match="'nope'"):
        c.limiter("nope")
    with pytest.raises(cache.CacheConfigError, match=r"rateLimit\.limits\.x"):
        make_cache(rate_limit={"limits": {"x": {"algorithm": "token_bucket", "rate": 1}}})


def test_scripts_are_reloaded_after_script_flush(make_cache: Any, raw: redis.Redis) -> None:
    c = make_cache()
    limiter = c.limiter("f", cache.TokenBucket(rate=1, burst=5))
    assert limiter.allow("u").allowed
    raw.script_flush()
    assert limiter.allow("u").remaining == 3  # NOSCRIPT -> SCRIPT LOAD -> same bucket


@pytest.mark.parametrize(
    ("fallback", "expected"),
    [("allow", [True] * 5), ("deny", [False] * 5), ("local", [True, True, True, False, False])],
)
def test_redis_down_uses_the_configured_fallback(
    make_cache: Any, fallback: str, expected: list[bool]
) -> None:
    c = make_cache(**DOWN, rate_limit={"fallback": fallback})
    for spec in (cache.TokenBucket(rate=0.1, burst=3), cache.SlidingWindow(limit=3, window=10)):
        limiter = c.limiter(f"l-{spec.algorithm}", spec)
        results = [limiter.allow("u") for _ in range(5)]
        assert [r.allowed for r in results] == expected
        assert {r.fallback for r in results} == {fallback}
    with pytest.raises(cache.CacheUnavailable):
        c.get("k")  # the fallback is the limiter's only


def test_fallback_ends_when_redis_is_back(make_cache: Any, redis_server_factory: Any) -> None:
    server = redis_server_factory()
    c = make_cache(
        address=f"127.0.0.1:{server.port}",
        db=0,
        **{k: v for k, v in DOWN.items() if k != "address"},
    )
    limiter = c.limiter("l", cache.SlidingWindow(limit=100, window=10))
    assert limiter.allow("u").fallback is None
    server.kill()
    assert limiter.allow("u").fallback == "local"
    server.start()
    deadline = time.monotonic() + 5
    while limiter.allow("u").fallback is not None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
