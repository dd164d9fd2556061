"""Flows (scripts, locks, bloom filters) and error translation, driven by a fake server."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import Any

import pytest
from redis import exceptions as rex

from im_infra import cache
from im_infra.cache._internal import bloom
from im_infra.cache._internal.errors import translate
from im_infra.cache._internal.flow import Cmd, Done, Flow, Runner, script_flow


def drive(flow: Flow[Any], server: Callable[[tuple[Any, ...]], Any]) -> Any:
    """A driver like the real ones, with ``server`` answering commands and no real sleeping."""
    runner = Runner(flow, ("s3cret",))
    step = runner.advance()
    while not isinstance(step, Done):
        reply, error = None, None
        if isinstance(step, Cmd):
            try:
                reply = server(step.args)
            except Exception as exc:
                error = exc
        step = runner.advance(reply, error)
    return step.value


def test_script_reloaded_after_noscript() -> None:
    sent: list[tuple[Any, ...]] = []
    loaded = False

    def server(args: tuple[Any, ...]) -> Any:
        nonlocal loaded
        sent.append(args)
        if args[0] == "SCRIPT LOAD":
            loaded = True
            return "sha"
        if not loaded:
            raise rex.NoScriptError("NOSCRIPT No matching script.")
        return b"ok"

    assert drive(script_flow("return 1", "sha", ["k"], ["a"]), server) == b"ok"
    assert [a[0] for a in sent] == ["EVALSHA", "SCRIPT LOAD", "EVALSHA"]
    assert sent[0] == ("EVALSHA", "sha", 1, "k", "a")


def test_script_error_is_translated_without_the_secret() -> None:
    def server(args: tuple[Any, ...]) -> Any:
        raise rex.ResponseError("ERR Error running script s3cret")

    with pytest.raises(cache.CacheResponseError) as info:
        drive(script_flow("x", "sha", [], []), server)
    assert "s3cret" not in str(info.value)
    assert "EVALSHA" in str(info.value)


class FakeCache:
    key_prefix = "svc:"

    def __init__(self, server: Callable[[tuple[Any, ...]], Any]) -> None:
        self.server = server

    def _drive(self, flow: Flow[Any]) -> Any:
        return drive(flow, self.server)


def test_lock_try_acquire_and_not_owned_release() -> None:
    store: dict[str, Any] = {}

    def server(args: tuple[Any, ...]) -> Any:
        if args[0] == "SET":
            if args[1] in store:
                return None
            store[args[1]] = args[2].encode()
            return True
        if args[0] == "EVALSHA":
            return 0  # compare-and-delete found another owner
        raise AssertionError(args)

    lock = cache.Lock(FakeCache(server), "job", ttl=5)  # type: ignore[arg-type]
    assert lock.try_acquire() is True
    other = cache.Lock(FakeCache(server), "job", ttl=5)  # type: ignore[arg-type]
    assert other.try_acquire() is False
    assert store["svc:job"] == lock.token.encode()
    with pytest.raises(cache.LockLost, match="job"):
        other.release()


def test_lock_acquire_times_out() -> None:
    calls = 0

    def server(args: tuple[Any, ...]) -> Any:
        nonlocal calls
        calls += 1
        return None  # always held by someone else

    lock = cache.Lock(FakeCache(server), "job", timeout=0.02)  # type: ignore[arg-type]
    with pytest.raises(cache.LockTimeout):
        lock.acquire()
    assert calls >= 2


def test_bloom_auto_falls_back_to_lua_once() -> None:
    sent: list[str] = []

    def server(args: tuple[Any, ...]) -> Any:
        sent.append(args[0])
        if args[0].startswith("BF."):
            raise rex.ResponseError("ERR unknown command 'BF.MADD', with args beginning with:")
        return [1]

    state = bloom.BloomState("auto")
    assert drive(bloom.add_flow(state, "svc:bf", [b"x"]), server) == [True]
    assert state.mode == "lua"
    assert drive(bloom.add_flow(state, "svc:bf", [b"y"]), server) == [True]
    assert sent == ["BF.MADD", "EVALSHA", "EVALSHA"]


def test_bloom_module_mode_does_not_fall_back() -> None:
    def server(args: tuple[Any, ...]) -> Any:
        raise rex.ResponseError("ERR unknown command 'BF.MADD'")

    with pytest.raises(cache.CacheResponseError):
        drive(bloom.add_flow(bloom.BloomState("module"), "k", [b"x"]), server)


def test_bloom_parameters_and_hashes() -> None:
    bits, hashes = bloom.parameters(0.01, 1000)
    assert (bits, hashes) == (9586, 7)
    assert bloom.header(0.01, 1000) == b"IMBF" + bits.to_bytes(4, "big") + hashes.to_bytes(4, "big")
    h = bloom.hash_args([b"a", b"a", b"b"])
    assert h[:2] == h[2:4] != h[4:]
    assert all(x % 2 == 1 for x in h[1::2])
    with pytest.raises(cache.CacheError):
        bloom.parameters(1.5, 10)


@pytest.mark.parametrize(
    ("exc", "cls"),
    [
        (rex.ConnectionError("Error 111 connecting"), cache.CacheUnavailable),
        (rex.TimeoutError("Timeout reading from socket"), cache.CacheTimeout),
        (rex.AuthenticationError("invalid password pw1"), cache.CacheAuthError),
        (rex.ResponseError("WRONGPASS invalid username-password pair"), cache.CacheAuthError),
        (rex.NoPermissionError("NOPERM this user has no permissions"), cache.CachePermissionError),
        (rex.ResponseError("WRONGTYPE Operation against a key"), cache.CacheResponseError),
        (rex.WatchError("Watched variable changed."), cache.CacheWatchError),
        (rex.RedisClusterException("Redis Cluster cannot be connected"), cache.CacheUnavailable),
        (rex.DataError("Invalid input of type"), cache.SerializationError),
    ],
)
def test_translation(exc: Exception, cls: type[cache.CacheError]) -> None:
    err = translate(exc, "GET", ("pw1",))
    assert type(err) is cls
    assert "pw1" not in str(err)
    assert str(err).startswith("redis GET: ")


def _raised_from(cause: BaseException) -> rex.ConnectionError:
    """A ConnectionError raised while handling ``cause``, as redis-py's connect() does."""
    try:
        try:
            raise cause
        except OSError as exc:
            raise rex.ConnectionError("Error 1 connecting to h:6380.") from exc
    except rex.ConnectionError as wrapped:
        return wrapped


def test_tls_failures_are_typed() -> None:
    verify = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED]")
    verify.verify_message = "Hostname mismatch, certificate is not valid for 'h'."
    err = translate(_raised_from(verify), "GET", ())
    assert type(err) is cache.CacheTLSError
    assert isinstance(err, cache.CacheUnavailable)
    assert "TLS certificate problem: Hostname mismatch" in str(err)
    alert = ssl.SSLError(1, "[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED]")
    alert.reason = "TLSV13_ALERT_CERTIFICATE_REQUIRED"
    assert "certificate required" in str(translate(_raised_from(alert), "GET", ()))
    plain = _raised_from(ConnectionRefusedError(111, "Connection refused"))
    assert type(translate(plain, "GET", ())) is cache.CacheUnavailable
