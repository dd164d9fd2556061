"""SnowflakeGenerator: validation, layout, sequence exhaustion, clock going backwards, close."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from typing import Any

import pytest

from im_infra import clog, uid

NS_PER_MS = 1_000_000


# -- construction and validation ---------------------------------------------------------------


@pytest.mark.parametrize("bad", [-1, 1024, 2**40, "1", 1.0, True, None])
def test_invalid_worker_id_is_a_value_error_naming_the_range(bad: object) -> None:
    with pytest.raises(uid.InvalidWorkerId, match=r"0\.\.1023") as info:
        uid.new_generator(bad)  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, uid.UIDError)


@pytest.mark.parametrize("worker", [0, 1, 1023])
def test_valid_worker_ids(worker: int) -> None:
    gen = uid.new_generator(worker)
    assert gen.worker_id == worker
    assert uid.parse(gen.next_id()).worker == worker


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"epoch_ms": -1}, "epoch_ms"),
        ({"epoch_ms": 1.5}, "epoch_ms"),
        ({"max_backward_ms": -1}, "max_backward_ms"),
        ({"max_backward_ms": 2.5}, "max_backward_ms"),
        ({"clock": lambda: 1.0e18}, "int nanoseconds"),
        ({"clock": "time"}, "callables"),
    ],
)
def test_invalid_options(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(uid.InvalidArgument, match=match):
        uid.new_generator(1, **kwargs)


def test_generator_satisfies_the_protocol() -> None:
    gen = uid.new_generator(1)
    assert isinstance(gen, uid.Generator)
    assert isinstance(gen, uid.SnowflakeGenerator)
    assert "worker=1" in repr(gen)


# -- layout ----------------------------------------------------------------------------------


def test_ids_carry_time_worker_and_sequence(fake_clock: Any) -> None:
    gen = uid.new_generator(77, clock=fake_clock, sleep=fake_clock.sleep)
    ids = [gen.next_id() for _ in range(3)]
    assert [uid.parse(i) for i in ids] == [(fake_clock.ms, 77, s) for s in range(3)]
    fake_clock.set_ms(fake_clock.ms + 5)
    assert uid.parse(gen.next_id()) == (fake_clock.ms, 77, 0)


def test_custom_epoch(fake_clock: Any) -> None:
    epoch = fake_clock.ms - 1000
    gen = uid.new_generator(3, epoch_ms=epoch, clock=fake_clock, sleep=fake_clock.sleep)
    value = gen.next_id()
    assert value == (1000 << 22) | (3 << 12)
    assert gen.parse(value) == (fake_clock.ms, 3, 0)
    assert gen.epoch_ms == epoch


def test_real_clock_timestamp_is_now() -> None:
    import time

    before = time.time_ns() // NS_PER_MS
    value = uid.new_generator(9).next_id()
    after = time.time_ns() // NS_PER_MS
    assert before <= uid.parse(value).timestamp_ms <= after


def test_clock_before_epoch_or_past_41_bits(fake_clock: Any) -> None:
    gen = uid.new_generator(1, epoch_ms=fake_clock.ms + 10, clock=fake_clock)
    with pytest.raises(uid.TimestampOutOfRange, match="outside the range"):
        gen.next_id()
    fake_clock.set_ms(uid.DEFAULT_EPOCH_MS + uid.MAX_TIMESTAMP_MS)  # the last usable ms
    last = uid.new_generator(1, clock=fake_clock)
    assert last.next_id() == uid.compose(fake_clock.ms, 1, 0)
    fake_clock.set_ms(fake_clock.ms + 1)  # 2093-09-06T15:47:35.552Z: past 41 bits
    with pytest.raises(uid.TimestampOutOfRange, match="41 bits"):
        last.next_id()


# -- sequence exhaustion ---------------------------------------------------------------------


def test_sequence_exhausted_waits_for_the_next_millisecond(fake_clock: Any) -> None:
    clock = fake_clock
    clock.step_ns = 100  # 4,096 reads stay within the first millisecond
    start_ms = clock.ms
    gen = uid.new_generator(5, clock=clock, sleep=clock.sleep)
    first = [gen.next_id() for _ in range(4096)]
    assert [uid.parse(i) for i in first] == [(start_ms, 5, s) for s in range(4096)]
    following = gen.next_id()
    assert uid.parse(following) == (start_ms + 1, 5, 0)
    assert following > first[-1]
    assert clock.sleeps == []  # the last millisecond is spun, not slept


def test_next_ids_spans_milliseconds_without_reusing_a_sequence(fake_clock: Any) -> None:
    clock = fake_clock
    clock.step_ns = 50_000  # 20 reads per millisecond
    gen = uid.new_generator(8, clock=clock, sleep=clock.sleep)
    ids = gen.next_ids(20_000)
    assert len(ids) == 20_000
    parsed = [uid.parse(i) for i in ids]
    per_ms: dict[int, list[int]] = {}
    for p in parsed:
        per_ms.setdefault(p.timestamp_ms, []).append(p.sequence)
    assert len(per_ms) == 5  # 4096 * 4 < 20_000 <= 4096 * 5
    for sequences in per_ms.values():
        assert sequences == list(range(len(sequences)))  # contiguous from 0, never > 4095
    assert ids == sorted(set(ids))


def test_next_ids_small_cases(fake_clock: Any) -> None:
    gen = uid.new_generator(2, clock=fake_clock)
    assert gen.next_ids(0) == []
    a = gen.next_id()
    batch = gen.next_ids(10)
    assert batch == list(range(a + 1, a + 11))
    assert gen.next_id() == a + 11


@pytest.mark.parametrize("bad", [-1, 1.0, "3", True])
def test_next_ids_rejects_a_bad_count(bad: object) -> None:
    with pytest.raises(uid.InvalidArgument, match="non-negative int"):
        uid.new_generator(1).next_ids(bad)  # type: ignore[arg-type]


def test_next_ids_real_clock_never_exceeds_the_sequence() -> None:
    gen = uid.new_generator(4)
    ids = gen.next_ids(50_000)
    counts: dict[int, int] = {}
    for i in ids:
        p = uid.parse(i)
        assert p.worker == 4
        counts[p.timestamp_ms] = counts.get(p.timestamp_ms, 0) + 1
    assert max(counts.values()) <= 4096
    assert len(ids) == len(set(ids)) == 50_000


# -- clock moving backwards --------------------------------------------------------------------


def test_small_backwards_step_is_waited_out(fake_clock: Any) -> None:
    fake_clock.step_ns = 1_000
    gen = uid.new_generator(6, clock=fake_clock, sleep=fake_clock.sleep, max_backward_ms=5)
    before = gen.next_id()
    last_ms = uid.parse(before).timestamp_ms
    fake_clock.set_ms(last_ms - 3)
    after = gen.next_id()
    assert after > before
    assert uid.parse(after).timestamp_ms >= last_ms
    assert fake_clock.sleeps and fake_clock.sleeps[0] == pytest.approx(0.002)
    assert fake_clock.ms >= last_ms  # it did wait for the clock to catch up


def test_large_backwards_step_raises_and_recovers(fake_clock: Any) -> None:
    gen = uid.new_generator(6, clock=fake_clock, sleep=fake_clock.sleep, max_backward_ms=5)
    before = gen.next_id()
    last_ms = fake_clock.ms
    fake_clock.set_ms(last_ms - 6)
    with pytest.raises(uid.ClockMovedBackwards, match="backwards by 6 ms") as info:
        gen.next_id()
    assert (info.value.backward_ms, info.value.max_backward_ms) == (6, 5)
    with pytest.raises(uid.ClockMovedBackwards):
        gen.next_ids(10)
    assert fake_clock.sleeps == []
    fake_clock.set_ms(last_ms)  # caught up: continues the same millisecond
    after = gen.next_id()
    assert after == before + 1


def test_zero_tolerance_raises_on_any_backwards_step(fake_clock: Any) -> None:
    gen = uid.new_generator(6, clock=fake_clock, max_backward_ms=0)
    gen.next_id()
    fake_clock.set_ms(fake_clock.ms - 1)
    with pytest.raises(uid.ClockMovedBackwards, match="backwards by 1 ms"):
        gen.next_id()


def test_clock_jumping_further_back_while_waiting_raises(fake_clock: Any) -> None:
    gen = uid.new_generator(6, clock=fake_clock, sleep=fake_clock.sleep, max_backward_ms=5)
    gen.next_id()
    last_ms = fake_clock.ms
    fake_clock.set_ms(last_ms - 4)

    def jump_back(clock: Any, seconds: float) -> None:
        clock.set_ms(last_ms - 50)

    fake_clock.on_sleep = jump_back
    with pytest.raises(uid.ClockMovedBackwards, match="backwards by 50 ms"):
        gen.next_id()


def test_backwards_clock_never_yields_a_smaller_or_duplicate_id(fake_clock: Any) -> None:
    clock = fake_clock
    clock.step_ns = 7_919
    gen = uid.new_generator(1, clock=clock, sleep=clock.sleep, max_backward_ms=5)
    seen: list[int] = []
    for step in range(3000):
        if step % 97 == 0:
            clock.now_ns -= (step % 5) * NS_PER_MS  # jump back 0..4 ms now and then
        seen.append(gen.next_id())
    assert seen == sorted(set(seen))


# -- close and context manager ---------------------------------------------------------------


def test_close_stops_generation_and_is_idempotent() -> None:
    calls: list[int] = []
    gen = uid.SnowflakeGenerator(1, on_close=lambda: calls.append(1))
    with gen as entered:
        assert entered is gen
        entered.next_id()
    assert gen.closed
    gen.close()
    assert calls == [1]
    with pytest.raises(uid.GeneratorClosed, match="closed"):
        gen.next_id()
    with pytest.raises(uid.GeneratorClosed):
        gen.next_ids(5)
    assert "GeneratorClosed" in repr(gen)


def test_close_survives_a_failing_release() -> None:
    def boom() -> None:
        raise RuntimeError("coord down")

    gen = uid.SnowflakeGenerator(1, on_close=boom)
    gen.close()
    assert gen.closed


def test_close_from_another_thread_stops_a_running_batch(interrupt: Callable[..., Any]) -> None:
    gen = uid.new_generator(3)
    assert interrupt(gen.next_ids, gen.close) == [uid.GeneratorClosed]


# -- uniqueness at scale -----------------------------------------------------------------------


@pytest.mark.slow
def test_ten_million_ids_strictly_increasing(strictly_increasing: Callable[..., int]) -> None:
    gen = uid.new_generator(11)
    last = -1
    for _ in range(100):  # 10M through next_ids
        batch = gen.next_ids(100_000)
        assert batch[0] > last
        assert strictly_increasing(batch) == 100_000
        last = batch[-1]
    # and the single-ID path, continuing the same sequence
    singles = [gen.next_id() for _ in range(300_000)]
    assert singles[0] > last
    assert strictly_increasing(singles) == 300_000


@pytest.mark.slow
def test_eight_threads_one_million_each_all_unique(
    strictly_increasing: Callable[..., int],
    merged: Callable[..., Iterable[int]],
    threads: Callable[..., None],
) -> None:
    from array import array

    gen = uid.new_generator(12)
    results: list[array[int]] = [array("q") for _ in range(8)]

    def run(slot: int) -> None:
        out = results[slot]
        for _ in range(100):
            out.extend(gen.next_ids(10_000))

    threads(run, 8)
    assert all(len(r) == 1_000_000 for r in results)
    for r in results:  # each thread sees its own IDs strictly increasing
        strictly_increasing(r)
    # all 8M merged in order: strictly increasing means no duplicate anywhere
    assert strictly_increasing(merged(*results)) == 8_000_000


def test_threads_using_next_id_get_unique_ids(threads: Callable[..., None]) -> None:
    gen = uid.new_generator(13)
    results: list[list[int]] = [[] for _ in range(8)]

    def run(slot: int) -> None:
        results[slot] = [gen.next_id() for _ in range(25_000)]

    threads(run, 8)
    for r in results:
        assert r == sorted(r)
    assert len({i for r in results for i in r}) == 200_000


# -- fork safety ---------------------------------------------------------------------------------


def test_pid_change_unseen_by_the_fork_hook_is_refused(
    fake_clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    gen = uid.new_generator(1, clock=fake_clock)
    gen.next_id()
    real = os.getpid()
    monkeypatch.setattr(os, "getpid", lambda: real + 1)  # as seen by the generator module
    fake_clock.set_ms(fake_clock.ms + 1)
    with pytest.raises(uid.GeneratorForked, match="forked child"):
        gen.next_id()


def test_next_ids_uses_milliseconds_missed_while_descheduled(fake_clock: Any) -> None:
    fake_clock.step_ns = 3 * NS_PER_MS  # every clock read is 3 ms later: a very slow thread
    gen = uid.new_generator(14, clock=fake_clock, sleep=fake_clock.sleep)
    start_ms = fake_clock.ms
    ids = gen.next_ids(5 * 4096)
    end_ms = fake_clock.ms
    stamps = sorted({uid.parse(i).timestamp_ms for i in ids})
    # five consecutive milliseconds, none skipped, all within the call and none in the future
    assert stamps == list(range(stamps[0], stamps[0] + 5))
    assert start_ms <= stamps[0] and stamps[-1] <= end_ms
    assert ids == sorted(set(ids))
    # the next call does not reuse them
    assert gen.next_id() > ids[-1]


def test_refused_backwards_step_is_one_warning_not_an_error_per_call(
    fake_clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The caller gets ClockMovedBackwards: uid itself writes one warning per episode."""
    clog.shutdown()  # unconfigured clog: uid's lines are stdlib records caplog sees
    caplog.set_level(logging.DEBUG, logger="im_infra")
    gen = uid.new_generator(6, clock=fake_clock, sleep=fake_clock.sleep, max_backward_ms=5)
    gen.next_id()
    last_ms = fake_clock.ms
    fake_clock.set_ms(last_ms - 6)
    for _ in range(3):
        with pytest.raises(uid.ClockMovedBackwards):
            gen.next_id()
    fake_clock.set_ms(last_ms + 1)
    gen.next_id()
    fake_clock.set_ms(last_ms - 10)  # a second episode is reported again
    with pytest.raises(uid.ClockMovedBackwards):
        gen.next_id()
    mine = [(r.name, r.levelno) for r in caplog.records if r.name.startswith("im_infra.uid")]
    assert mine == [("im_infra.uid", logging.WARNING)] * 2
