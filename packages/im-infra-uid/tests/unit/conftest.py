"""Shared fixtures for the uid unit tests: a controllable clock."""

from __future__ import annotations

import heapq
import itertools
import operator
import threading
from collections.abc import Callable, Iterable

import pytest

NS_PER_MS = 1_000_000
#: 2026-01-01T00:00:00Z, well inside the default epoch's range.
T0_MS = 1_767_225_600_000


class FakeClock:
    """An injectable clock (int ns since the Unix epoch) and sleep function.

    Each read returns ``now_ns`` and then advances it by ``step_ns`` (so a generator polling
    the clock sees time pass); ``sleep(seconds)`` advances it by that much and is recorded.
    ``on_sleep`` lets a test change the time from inside a wait.
    """

    def __init__(self, start_ms: int = T0_MS, step_ns: int = 0) -> None:
        self.now_ns = start_ms * NS_PER_MS
        self.step_ns = step_ns
        self.reads = 0
        self.sleeps: list[float] = []
        self.on_sleep: Callable[[FakeClock, float], None] | None = None

    def __call__(self) -> int:
        now = self.now_ns
        self.now_ns += self.step_ns
        self.reads += 1
        return now

    @property
    def ms(self) -> int:
        return self.now_ns // NS_PER_MS

    def set_ms(self, ms: int) -> None:
        self.now_ns = ms * NS_PER_MS

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if self.on_sleep is not None:
            self.on_sleep(self, seconds)
        else:
            self.now_ns += round(seconds * 1e9)


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


def assert_strictly_increasing(values: Iterable[int]) -> int:
    """Assert every value is larger than the one before; return how many there were."""
    it = iter(values)
    count = 0
    prev = -1
    for chunk in iter(lambda: list(itertools.islice(it, 262_144)), []):
        assert prev < chunk[0], f"not increasing: {prev} then {chunk[0]}"
        assert all(map(operator.lt, chunk, itertools.islice(chunk, 1, None))), (
            "not strictly increasing within a chunk"
        )
        prev = chunk[-1]
        count += len(chunk)
    return count


@pytest.fixture
def strictly_increasing() -> Callable[[Iterable[int]], int]:
    return assert_strictly_increasing


@pytest.fixture
def merged() -> Callable[..., Iterable[int]]:
    """heapq.merge of several sorted sequences (for uniqueness checks across threads)."""
    return heapq.merge


def run_in_threads(target: Callable[[int], object], count: int, timeout: float = 120) -> None:
    """Run ``target(slot)`` for slot 0..count-1 in threads started together; wait for all."""
    threads = [threading.Thread(target=target, args=(slot,)) for slot in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=timeout)
    assert not any(thread.is_alive() for thread in threads), "threads did not finish in time"


def interrupted_batch(batch: Callable[[int], object], stop: Callable[[], None]) -> list[type]:
    """Start ``batch(50_000_000)`` (~12 s at the Snowflake limit) in a thread, call ``stop()``
    from this thread once it runs, and return the types of what the batch raised."""
    errors: list[type] = []
    started = threading.Event()

    def run(_: int) -> None:
        started.set()
        try:
            batch(50_000_000)
        except BaseException as exc:
            errors.append(type(exc))

    worker = threading.Thread(target=run, args=(0,))
    worker.start()
    started.wait()
    stop()
    worker.join(timeout=10)
    assert not worker.is_alive(), "the batch did not stop"
    return errors


@pytest.fixture
def threads() -> Callable[..., None]:
    return run_in_threads


@pytest.fixture
def interrupt() -> Callable[..., list[type]]:
    return interrupted_batch
