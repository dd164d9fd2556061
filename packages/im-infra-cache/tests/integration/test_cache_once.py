"""Idempotency keys against the real Redis: a redelivery is skipped (the stored outcome returned),
also after the consumer that handled it was SIGKILLed before acknowledging; a consumer killed
while handling blocks redeliveries only until its in-progress mark expires."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from typing import Any

import pytest

from im_infra import cache

from .conftest import address_of, unique_service

pytestmark = pytest.mark.integration

CONSUMER = textwrap.dedent(
    """
    import sys, time
    from im_infra import cache

    service, address, db, msg_id, mode = sys.argv[1:6]
    c = cache.new(service, address=address, db=int(db), once={"inProgressTtl": 1.5})

    def handle():
        print("handling", flush=True)
        if mode == "hang":
            time.sleep(60)  # killed here, mid-handling
        return {"delivered_to": "first-consumer"}

    out = c.once("im-logic.msg").run(msg_id, handle)
    print("done", out.duplicate, flush=True)
    time.sleep(60)  # killed here: handled and recorded, never acknowledged
    """
)


def consumer(redis_url: str, service: str, msg_id: str, mode: str) -> subprocess.Popen[str]:
    addr = address_of(redis_url)
    return subprocess.Popen(
        [sys.executable, "-c", CONSUMER, service, addr["address"], str(addr["db"]), msg_id, mode],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def read_until(proc: subprocess.Popen[str], word: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith(word):
            return
        if not line and proc.poll() is not None:
            break
    pytest.fail(f"consumer never printed {word!r}")


def kill(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)


def test_a_redelivery_after_the_consumer_was_sigkilled_is_skipped(redis_url: str) -> None:
    service = unique_service("once")
    proc = consumer(redis_url, service, "msg-1", "finish")
    try:
        read_until(proc, "done")
    finally:
        kill(proc)  # before any ack: the broker redelivers msg-1 to another consumer
    c = cache.new(service, **address_of(redis_url))
    try:
        called = []
        out = c.once("im-logic.msg").run("msg-1", lambda: called.append(1))
        assert out.duplicate is True
        assert out.value == {"delivered_to": "first-consumer"}
        assert called == []
        fresh = c.once("im-logic.msg").run("msg-2", lambda: "handled")
        assert (fresh.value, fresh.duplicate) == ("handled", False)
    finally:
        c.once("im-logic.msg").forget("msg-1")
        c.once("im-logic.msg").forget("msg-2")
        c.close()


def test_a_consumer_killed_mid_handling_blocks_redelivery_until_its_mark_expires(
    redis_url: str,
) -> None:
    service = unique_service("once")
    proc = consumer(redis_url, service, "msg-1", "hang")
    try:
        read_until(proc, "handling")
    finally:
        kill(proc)
    c = cache.new(service, **address_of(redis_url), once={"inProgressTtl": 1.5})
    try:
        once = c.once("im-logic.msg")
        with pytest.raises(cache.OnceInProgress):
            once.run("msg-1", lambda: "second")
        deadline = time.monotonic() + 5
        while True:
            try:
                out = once.run("msg-1", lambda: "second")
                break
            except cache.OnceInProgress:
                assert time.monotonic() < deadline, "the in-progress mark never expired"
                time.sleep(0.1)
        assert (out.value, out.duplicate) == ("second", False)
        assert once.run("msg-1", lambda: "third").value == "second"
    finally:
        c.once("im-logic.msg").forget("msg-1")
        c.close()


def test_run_twice_runs_once(make_cache: Any) -> None:
    c = make_cache()
    once = c.once("orders")
    calls: list[int] = []

    def handler(n: int) -> Any:
        calls.append(n)
        return {"total": 4 + n}

    first = once.run("o-1", lambda: handler(1))
    second = once.run("o-1", lambda: handler(2))
    assert (first.value, first.duplicate) == ({"total": 5}, False)
    assert (second.value, second.duplicate) == ({"total": 5}, True)
    assert calls == [1]


def test_a_failing_handler_releases_the_key(make_cache: Any) -> None:
    c = make_cache()
    once = c.once("orders")

    def boom() -> None:
        raise RuntimeError("db down")

    with pytest.raises(RuntimeError, match="db down"):
        once.run("o-1", boom)
    assert once.run("o-1", lambda: "ok").value == "ok"  # redelivery handles it again


def test_begin_finish_abandon(make_cache: Any) -> None:
    c = make_cache(once={"doneTtl": 60})
    once = c.once("jobs")
    claim = once.begin("j-1")
    assert claim.state == "acquired"
    assert once.begin("j-1").state == "in_progress"
    assert once.abandon(claim) is True
    claim = once.begin("j-1")
    assert once.finish(claim, [1, 2]) is True
    done = once.begin("j-1")
    assert (done.state, done.outcome) == ("done", [1, 2])
    assert once.finish(claim, [3]) is False  # already done: the first outcome stays
    assert 59 < c.ttl("once:jobs:j-1") <= 60
    with pytest.raises(cache.CacheError, match="state 'done'"):
        once.finish(done, 1)


def test_async_handlers(redis_url: str) -> None:
    import asyncio

    async def main() -> None:
        c = cache.new_async(unique_service("once"), **address_of(redis_url))
        try:
            once = c.once("n")

            async def handler() -> str:
                await asyncio.sleep(0.01)
                return "async-outcome"

            assert (await once.run("k", handler)).value == "async-outcome"
            assert (await once.run("k", handler)).duplicate is True
            await once.forget("k")
        finally:
            await c.close()

    asyncio.run(main())
