"""The blocking pool's queue (``_internal/lifo.py``): LIFO, bounded, ``get`` waits with a timeout,
and nothing is lost or handed out twice under threads; and redis-py's BlockingConnectionPool on it
still bounds the connections in use."""

from __future__ import annotations

import threading
import time
from queue import Empty, Full
from typing import Any

import pytest
import redis

from im_infra.cache._internal.lifo import LifoQueue


def test_last_in_first_out_and_bounded() -> None:
    q = LifoQueue(3)
    for item in (None, "a", "b"):
        q.put_nowait(item)
    with pytest.raises(Full):
        q.put_nowait("c")
    assert q.qsize() == 3 and list(q.queue) == [None, "a", "b"]
    assert [q.get(), q.get(), q.get()] == ["b", "a", None]
    assert q.empty()


def test_get_waits_for_a_put_and_times_out_when_none_comes() -> None:
    q = LifoQueue(1)
    started = time.monotonic()
    with pytest.raises(Empty):
        q.get(True, 0.05)
    assert time.monotonic() - started >= 0.04
    with pytest.raises(Empty):
        q.get(False)
    threading.Timer(0.05, q.put_nowait, ("late",)).start()
    assert q.get(True, 5) == "late"


def test_threads_share_items_without_losing_or_doubling_any() -> None:
    q = LifoQueue(4)
    for i in range(4):
        q.put_nowait(i)
    holding: set[int] = set()
    guard = threading.Lock()
    errors: list[str] = []

    def worker() -> None:
        for _ in range(2000):
            item = q.get(True, 5)
            with guard:
                if item in holding:
                    errors.append(f"{item} handed out twice")
                holding.add(item)
            with guard:
                holding.discard(item)
            q.put_nowait(item)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(q.queue) == [0, 1, 2, 3]


def test_the_blocking_pool_on_it_bounds_connections_in_use() -> None:
    blocking_pool: Any = redis.BlockingConnectionPool  # (redis-py's constructor is untyped)
    pool = blocking_pool(
        max_connections=2, timeout=0.05, queue_class=LifoQueue, host="127.0.0.1", port=1
    )
    first, second = pool.pool.get(), pool.pool.get()  # (what get_connection takes: both slots)
    with pytest.raises(redis.ConnectionError, match="No connection available"):
        pool.get_connection()
    pool.pool.put_nowait(first)
    pool.pool.put_nowait(second)
    assert pool.pool.qsize() == 2
