"""Distributed locks against the stack's etcd."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from im_infra import coord
from im_infra.coord import LockLost, LockTimeout


def test_acquire_release_and_try(provider: coord.EtcdProvider, unique: str) -> None:
    lock = provider.lock.acquire(unique, ttl=3, timeout=5)
    assert lock.held
    assert provider.lock.try_acquire(unique) is None
    with pytest.raises(LockTimeout, match=unique):
        provider.lock.acquire(unique, ttl=3, timeout=0.3)
    lock.release()
    lock.release()  # idempotent
    assert not lock.held
    again = provider.lock.try_acquire(unique, ttl=3)
    assert again is not None
    again.release()


def test_context_manager_and_fifo_handover(provider: coord.EtcdProvider, unique: str) -> None:
    order: list[str] = []
    first = provider.lock.acquire(unique, ttl=3)
    started = threading.Event()

    def waiter() -> None:
        started.set()
        with provider.lock.acquire(unique, ttl=3, timeout=10):
            order.append("waiter")

    t = threading.Thread(target=waiter)
    t.start()
    assert started.wait(2)
    time.sleep(0.3)
    order.append("holder")
    first.release()
    t.join(10)
    assert order == ["holder", "waiter"]


def test_hold_longer_than_ttl(provider: coord.EtcdProvider, unique: str) -> None:
    with provider.lock.acquire(unique, ttl=1, timeout=5) as lock:
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:
            assert provider.lock.try_acquire(unique) is None
            time.sleep(0.25)
        assert lock.held


def test_lock_lost_is_signalled(
    provider: coord.EtcdProvider, etcd_endpoints: str, unique: str
) -> None:
    lost = threading.Event()
    lock = provider.lock.acquire(unique, ttl=2)
    lock.on_lost(lambda _l: lost.set())
    kv = provider.client.get(lock.key)
    assert kv is not None
    with coord.connect(etcd_endpoints) as other:
        other.client.lease_revoke(kv.lease)
    assert lost.wait(5)
    assert lock.lost
    assert not lock.held
    with pytest.raises(LockLost):
        lock.check()
    with pytest.raises(LockLost, match=unique):
        lock.release()


def test_with_block_raises_lock_lost(
    provider: coord.EtcdProvider, etcd_endpoints: str, unique: str
) -> None:
    def critical_section() -> None:
        with provider.lock.acquire(unique, ttl=2) as lock:
            kv = provider.client.get(lock.key)
            assert kv is not None
            with coord.connect(etcd_endpoints) as other:
                other.client.lease_revoke(kv.lease)
            deadline = time.monotonic() + 5
            while not lock.lost and time.monotonic() < deadline:
                time.sleep(0.05)

    with pytest.raises(LockLost):
        critical_section()


def test_dead_holder_frees_lock_after_ttl(
    provider: coord.EtcdProvider, etcd_endpoints: str, unique: str, workers: Any
) -> None:
    proc = workers.start("hold-lock", etcd_endpoints, unique, "2")
    assert workers.read_line(proc, 20) == "held"
    assert provider.lock.try_acquire(unique) is None
    proc.kill()
    start = time.monotonic()
    lock = provider.lock.acquire(unique, ttl=3, timeout=6)
    assert time.monotonic() - start <= 3.0 + 0.5  # TTL 2 s + 1 s (+ scheduling slack)
    lock.release()


async def test_async_variants(provider: coord.EtcdProvider, unique: str) -> None:
    lock = await provider.lock.acquire_async(unique, ttl=3, timeout=5)
    assert await provider.lock.try_acquire_async(unique) is None
    with pytest.raises(LockTimeout):
        await provider.lock.acquire_async(unique, ttl=3, timeout=0.2)
    await lock.release_async()
    async with await provider.lock.acquire_async(unique, ttl=3, timeout=5) as held:
        assert held.held
    assert not held.held


async def test_async_cancel_does_not_leak_the_lock(
    provider: coord.EtcdProvider, unique: str
) -> None:
    holder = provider.lock.acquire(unique, ttl=3)
    task = asyncio.create_task(provider.lock.acquire_async(unique, ttl=3, timeout=10))
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    holder.release()
    got = await provider.lock.acquire_async(unique, ttl=3, timeout=3)  # the waiter gave up
    await got.release_async()


def test_20_contenders_across_processes(
    etcd_endpoints: str, unique: str, workers: Any, tmp_path: Path
) -> None:
    counter = tmp_path / "counter"
    procs = [
        workers.start("lock", etcd_endpoints, unique, "5", "3", str(counter)) for _ in range(4)
    ]
    for proc in procs:
        result = json.loads(workers.read_line(proc, 90))
        assert result["failures"] == []
    now, peak, total = (int(x) for x in counter.read_text().split())
    assert (now, peak, total) == (0, 1, 4 * 5 * 3)


def test_undeletable_queue_key_retires_the_session(
    provider: coord.EtcdProvider, etcd_endpoints: str, unique: str, wait_for: Any
) -> None:
    """A waiter that gives up but cannot delete its queue key must not leave it behind to block
    the lock: its session lease is revoked (once it holds nothing), taking the key with it."""
    with coord.connect(etcd_endpoints) as other:
        holder = other.lock.acquire(unique, ttl=3)
        real_delete = provider.lock._delete
        failures = 0

        def failing_delete(key: str) -> None:
            nonlocal failures
            failures += 1
            raise coord.CoordUnavailable("simulated: etcd unreachable for the cleanup")

        provider.lock._delete = failing_delete  # type: ignore[method-assign]
        try:
            with pytest.raises(LockTimeout):
                provider.lock.acquire(unique, ttl=3, timeout=0.3)
        finally:
            provider.lock._delete = real_delete  # type: ignore[method-assign]
        assert failures == 1
        prefix = f"/im-infra/lock/{unique}/"
        wait_for(
            lambda: (
                [kv.key for kv in provider.client.range(prefix, prefix=True).kvs] == [holder.key]
            ),
            3,
            "the waiter's key removed with its session",
        )
        holder.release()
        with provider.lock.acquire(unique, ttl=3, timeout=3) as again:  # a fresh session
            assert again.held
