"""Auth, ACL, timeouts and a Redis killed mid-run: typed errors within bounded time, never the
password in a message, and recovery without recreating the client (blocking and asyncio)."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from im_infra import cache

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PASSWORD = "s3cret-pw-7f2a"
FAST = {
    "connect_timeout": 1.0,
    "read_timeout": 1.0,
    "retry": {"max_retries": 2, "min_backoff": 0.01, "max_backoff": 0.05},
}
BOUND = 8.0  # seconds any failing call may take with FAST settings (3 tries x 1 s + backoff)


def addr(port: int) -> str:
    return f"127.0.0.1:{port}"


def fails_within(call: Callable[[], Any], error: type[Exception]) -> Exception:
    """``call()`` raises ``error`` within BOUND seconds; the exception."""
    started = time.monotonic()
    with pytest.raises(error) as info:
        call()
    assert time.monotonic() - started < BOUND
    for secret in (PASSWORD, "wrong-pw-91"):
        assert secret not in str(info.value)
        assert secret not in repr(info.value)
    return info.value


def test_connection_refused_is_unavailable(make_cache: Any) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    c = make_cache(address=addr(port), password=PASSWORD, **FAST)
    err = fails_within(lambda: c.get("k"), cache.CacheUnavailable)
    assert not isinstance(err, cache.CacheTimeout)


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A TCP port that accepts connections (backlog) and never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        yield s.getsockname()[1]


def test_unanswered_server_is_a_timeout(make_cache: Any, silent_port: int) -> None:
    c = make_cache(address=addr(silent_port), password=PASSWORD, **{**FAST, "read_timeout": 0.3})
    fails_within(lambda: c.set("k", "v"), cache.CacheTimeout)
    fails_within(lambda: c.pipeline().set("k", "v").execute(), cache.CacheTimeout)
    fails_within(lambda: c.lock("l").try_acquire(), cache.CacheTimeout)


def test_requirepass(make_cache: Any, redis_server_factory: Any) -> None:
    server = redis_server_factory("--requirepass", PASSWORD)
    anonymous = make_cache(address=addr(server.port), **FAST)
    fails_within(lambda: anonymous.get("k"), cache.CacheAuthError)
    wrong = make_cache(address=addr(server.port), password="wrong-pw-91", **FAST)
    fails_within(lambda: wrong.set("k", "v"), cache.CacheAuthError)
    right = make_cache(address=addr(server.port), password=PASSWORD, **FAST)
    assert right.set("k", "v") is True
    assert right.get("k") == "v"
    via_url = make_cache(address=f"redis://:{PASSWORD}@127.0.0.1:{server.port}/0", **FAST)
    assert via_url.get("k") is None  # another service: another prefix
    assert PASSWORD not in repr(via_url.config)


def test_acl_user_limited_to_the_prefix(make_cache: Any, redis_server_factory: Any) -> None:
    server = redis_server_factory("--user", "app", "on", f">{PASSWORD}", "~acl-svc:*", "+@all")
    c = make_cache("acl-svc", address=addr(server.port), username="app", password=PASSWORD, **FAST)
    assert c.set("k", "v", 30) is True
    assert c.get("k") == "v"
    assert c.pipeline().incr("n").hset("h", "f", 1).execute() == [1, 1]
    script = c.register_script("return redis.call('GET', KEYS[1])")
    assert script(["k"]) == "v"
    lock = c.lock("job")
    assert lock.try_acquire() is True
    lock.release()
    assert c.bf_add("seen", "x") is True
    assert c.bf_exists("seen", "x") is True
    outsider = make_cache(
        "other-svc", address=addr(server.port), username="app", password=PASSWORD, **FAST
    )
    fails_within(lambda: outsider.set("k", "v"), cache.CachePermissionError)
    bad = make_cache("acl-svc", address=addr(server.port), username="app", password="wrong-pw-91")
    fails_within(lambda: bad.get("k"), cache.CacheAuthError)


def test_killed_mid_run_then_recovers_without_a_new_client(
    make_cache: Any, redis_server_factory: Any
) -> None:
    server = redis_server_factory("--requirepass", PASSWORD)
    c = make_cache(address=addr(server.port), password=PASSWORD, **FAST)
    assert c.set("k", "v") is True
    lock = c.lock("job", ttl=30)
    assert lock.try_acquire() is True
    server.kill()
    fails_within(lambda: c.get("k"), cache.CacheUnavailable)
    fails_within(lambda: c.set("k", "v2"), cache.CacheUnavailable)
    fails_within(lambda: c.pipeline(transaction=False).get("k").execute(), cache.CacheUnavailable)
    fails_within(lambda: lock.release(), cache.CacheUnavailable)
    fails_within(lambda: c.bf_add("bf", "x"), cache.CacheUnavailable)
    server.start()  # same port, empty data (no persistence)
    assert c.get("k") is None
    assert c.set("k", "v3") is True
    assert c.get("k") == "v3"
    assert c.pipeline().incr("n").execute() == [1]
    assert lock.try_acquire() is True  # the old lock died with the data
    assert c.bf_add("bf", "x") is True
    script = c.register_script("return 7")
    assert script() == 7  # loaded into the new server on NOSCRIPT
