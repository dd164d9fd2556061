"""uid.uuid7(): RFC 9562 layout, monotonic within a process, thread-safe."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from im_infra import uid
from im_infra.uid import uuidv7 as uuid7_module


def test_version_variant_and_timestamp() -> None:
    before = time.time_ns() // 1_000_000
    u = uid.uuid7()
    after = time.time_ns() // 1_000_000
    assert isinstance(u, uuid.UUID)
    assert u.version == 7
    assert u.variant == uuid.RFC_4122
    assert before <= u.int >> 80 <= after


def test_monotonic_within_a_process() -> None:
    values = [uid.uuid7() for _ in range(50_000)]
    assert values == sorted(values)
    assert len(set(values)) == len(values)
    strings = [str(v) for v in values]
    assert strings == sorted(strings)  # the text form sorts the same way


def test_threads_get_unique_values(threads: Callable[..., None]) -> None:
    results: list[list[uuid.UUID]] = [[] for _ in range(4)]

    def run(slot: int) -> None:
        results[slot] = [uid.uuid7() for _ in range(10_000)]

    threads(run, 4)
    for r in results:
        assert r == sorted(r)
    assert len({u for r in results for u in r}) == 40_000


def test_backwards_clock_keeps_counting_on_the_last_millisecond(fake_clock: Any) -> None:
    source = uid.UUID7Source(clock=fake_clock)
    first = source.next()
    fake_clock.set_ms(fake_clock.ms - 1000)
    second = source.next()
    assert second > first
    assert second.int >> 80 == first.int >> 80


def counter(u: uuid.UUID) -> int:
    """The 42-bit counter: rand_a (12 bits) then the top 30 bits of rand_b."""
    return ((u.int >> 64) & 0xFFF) << 30 | (u.int >> 32) & 0x3FFF_FFFF


def test_new_millisecond_reseeds_and_same_millisecond_counts(fake_clock: Any) -> None:
    source = uid.UUID7Source(clock=fake_clock, randbytes=lambda n: b"\xff" * n)
    a = source.next()
    b = source.next()
    assert counter(a) == (1 << 41) - 1  # seed: all random bits set except the counter's top bit
    assert counter(b) == counter(a) + 1
    fake_clock.set_ms(fake_clock.ms + 1)
    c = source.next()
    assert c.int >> 80 == fake_clock.ms
    assert counter(c) == (1 << 41) - 1


def test_counter_overflow_advances_the_timestamp(fake_clock: Any) -> None:
    source = uid.UUID7Source(clock=fake_clock)
    first = source.next()
    source._counter = uuid7_module._COUNTER_MAX  # as if 2**41 UUIDs were made this millisecond
    second = source.next()
    assert second.int >> 80 == (first.int >> 80) + 1
    assert second > first
