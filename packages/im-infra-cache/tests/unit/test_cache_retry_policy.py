"""Which commands are retried (issue #15 item 1) and how a failure is classified: the safe list,
and "raised before the command was written" marked by the cache's connection classes on real
redis-py errors (a closed port, a port that never answers, one that takes the command and never
answers); bad keys and values (item 8) without a server."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.asyncio
from redis import exceptions as rex

from im_infra import cache
from im_infra.cache._internal.args import KeyPrefix
from im_infra.cache._internal.backend import ASYNC, SYNC
from im_infra.cache._internal.errors import translate
from im_infra.cache._internal.retry import SAFE, GatedRetry, is_safe, may_have_run
from im_infra.cache._internal.sent import CONNECTION_HOOKS, not_sent, tracked


@pytest.mark.parametrize(
    "args",
    [
        ("GET", "k"),
        (b"MGET", "a", "b"),
        ("SET", "k", "v"),
        ("SET", "k", "v", "PX", 100),
        ("SET", "k", "v", "PX", 100, "XX"),
        ("PEXPIRE", "k", 100),
        ("SCRIPT LOAD", "return 1"),
        ("MSET", "a", 1),
        ("SET", "k", "NX"),  # the value "NX", not an option: options start at args[3]
    ],
)
def test_safe_commands(args: tuple[Any, ...]) -> None:
    assert is_safe(args)


@pytest.mark.parametrize(
    "args",
    [
        ("INCRBY", "k", 1),
        ("SET", "k", "v", "PX", 100, "NX"),
        ("SET", "k", "v", "nx"),
        ("SET", "k", "v", "GET"),
        ("PEXPIRE", "k", 100, "GT"),
        ("DEL", "k"),
        ("HSET", "h", "f", "v"),
        ("LPUSH", "l", "x"),
        ("EVALSHA", "abc", 0),
        ("GETSET", "k", "v"),
        ("UNKNOWN", "k"),
    ],
)
def test_unsafe_commands(args: tuple[Any, ...]) -> None:
    assert not is_safe(args)


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.fixture
def mute_port() -> Iterator[int]:
    """A server that answers +OK to the handshake (CLIENT SETINFO ...) and never answers INCR:
    the command is written, its reply never comes."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=answer, args=(conn,), daemon=True).start()

    def answer(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(65536):
                if b"INCR" not in data:
                    conn.sendall(b"+OK\r\n" * data.count(b"*"))

    threading.Thread(target=serve, daemon=True).start()
    yield server.getsockname()[1]
    server.close()


@pytest.fixture
def silent_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield s.getsockname()[1]


def _sync_client(port: int, **kw: Any) -> redis.Redis:
    """A client on the cache's own classes (SYNC flavour), no retries."""
    retry = GatedRetry(redis.backoff.NoBackoff(), 0)
    pool = SYNC.pool(
        connection_class=SYNC.connection, port=port, retry=retry, timeout=1, protocol=2, **kw
    )
    return redis.Redis(connection_pool=pool, retry=retry)


def _error(client: Any, *args: Any) -> Exception:
    try:
        client.execute_command(*args)
    except (rex.ConnectionError, rex.TimeoutError) as exc:
        return exc
    raise AssertionError("no error")


def test_refused_connection_is_recognised_as_not_sent(closed_port: int) -> None:
    exc = _error(_sync_client(closed_port), "INCR", "k")
    assert not_sent(exc)
    assert not may_have_run(exc)
    assert not isinstance(translate(exc, "INCRBY", (), unsafe=True), cache.CacheOutcomeUnknown)


def test_unanswered_handshake_is_recognised_as_not_sent(silent_port: int) -> None:
    exc = _error(_sync_client(silent_port, password="pw", socket_timeout=0.2), "INCR", "k")
    assert isinstance(exc, rex.TimeoutError)
    assert not_sent(exc)


def test_an_unanswered_command_may_have_run(mute_port: int) -> None:
    """Connected, the command written, no reply: not marked, whatever redis-py function names
    the traceback holds."""
    exc = _error(_sync_client(mute_port, socket_timeout=0.2), "INCR", "k")
    assert isinstance(exc, rex.TimeoutError)
    assert not not_sent(exc)
    assert may_have_run(exc)


def _async_error(port: int, **kw: Any) -> Exception:
    """The error of an INCR from a client on the cache's own classes (ASYNC flavour)."""

    async def run() -> Exception:
        pool = ASYNC.pool(connection_class=ASYNC.connection, port=port, protocol=2, **kw)
        client = redis.asyncio.Redis(connection_pool=pool)
        try:
            await client.execute_command("INCR", "k")  # type: ignore[no-untyped-call]
        except (rex.ConnectionError, rex.TimeoutError) as exc:
            return exc
        finally:
            await client.aclose()
        raise AssertionError("no error")

    return asyncio.run(run())


def test_async_refused_connection_is_recognised_as_not_sent(closed_port: int) -> None:
    assert not_sent(_async_error(closed_port))


def test_async_unanswered_command_may_have_run(mute_port: int) -> None:
    exc = _async_error(mute_port, socket_timeout=0.2)
    assert isinstance(exc, rex.TimeoutError)
    assert may_have_run(exc)


def test_redis_py_without_a_hook_is_refused_loudly() -> None:
    class Renamed(redis.Connection):
        on_connect_check_health = None  # type: ignore[assignment]

    with pytest.raises(RuntimeError, match="on_connect_check_health"):
        tracked(Renamed, CONNECTION_HOOKS)


def test_a_read_timeout_after_sending_may_have_run() -> None:
    with pytest.raises(rex.TimeoutError) as info:
        raise rex.TimeoutError("Timeout reading from 127.0.0.1:6379")
    exc = info.value
    assert may_have_run(exc)
    failure = translate(exc, "INCRBY", (), unsafe=True)
    assert isinstance(failure, cache.CacheOutcomeUnknown)
    assert failure.timed_out
    assert isinstance(translate(exc, "GET", (), unsafe=False), cache.CacheTimeout)


def test_retry_gate_follows_the_safe_flag() -> None:
    retry = GatedRetry(redis.backoff.NoBackoff(), 2)
    calls: list[int] = []

    def fails() -> None:
        calls.append(1)
        raise rex.TimeoutError("Timeout reading from x")

    with pytest.raises(rex.TimeoutError):
        retry.call_with_retry(fails, lambda _e: None)
    assert len(calls) == 1
    token = SAFE.set(True)
    try:
        with pytest.raises(rex.TimeoutError):
            retry.call_with_retry(fails, lambda _e: None)
    finally:
        SAFE.reset(token)
    assert len(calls) == 1 + 3


def test_key_prefix_rejects_a_key_that_is_not_a_str() -> None:
    prefix = KeyPrefix("svc:")
    assert prefix + "k" == "svc:k"
    for bad in (None, 1, b"k", ["k"]):
        with pytest.raises(cache.CacheArgumentError, match="key must be a str"):
            prefix + bad  # type: ignore[operator]


def test_bad_keys_and_values_are_argument_errors_before_any_io(closed_port: int) -> None:
    c = cache.new("svc", address=f"127.0.0.1:{closed_port}", retry={"max_retries": 0})
    try:
        with pytest.raises(cache.CacheArgumentError, match="value is None"):
            c.set("k", None)
        with pytest.raises(cache.CacheArgumentError, match="key must be a str, not NoneType"):
            c.get(None)  # type: ignore[arg-type]
        with pytest.raises(cache.CacheArgumentError, match="mutually exclusive"):
            c.set("k", "v", nx=True, xx=True, expiration=1)
        assert isinstance(cache.CacheArgumentError("x"), ValueError)
        assert isinstance(cache.LockTimeout("x"), TimeoutError)
    finally:
        c.close()
