"""The issued-IDs count behind ``im_infra.uid.ids.issued`` (read without an SDK: the callback
and the generator's own total), with a fake clock so milliseconds change when the test says."""

from __future__ import annotations

import gc
from typing import Any

from im_infra import uid
from im_infra.uid._internal import metrics

NS_PER_MS = 1_000_000


def observed() -> int:
    (observation,) = metrics._observe_issued(None)  # type: ignore[arg-type]
    return int(observation.value)


def test_total_follows_next_id_and_next_ids_across_milliseconds(fake_clock: Any) -> None:
    gen = uid.new_generator(1, clock=fake_clock, sleep=fake_clock.sleep)
    fake_clock.step_ns = 1_000  # time passes while the generator waits for a new millisecond
    assert gen._issued_total() == 0
    for _ in range(10):
        gen.next_id()
    assert gen._issued_total() == 10
    fake_clock.set_ms(fake_clock.ms + 1)
    gen.next_id()  # a new millisecond: the previous one's 10 go into the running total
    assert gen._issued_total() == 11
    gen.next_ids(5_000)  # uses up the millisecond (4,096) and moves on
    assert gen._issued_total() == 5_011
    gen.next_ids(0)
    gen.close()
    assert gen._issued_total() == 5_011


def test_callback_sums_live_generators_and_keeps_collected_ones() -> None:
    start = observed()
    a = uid.new_generator(2)
    b = uid.new_generator(3)
    a.next_ids(100)
    b.next_id()
    assert observed() - start == 101
    del a
    gc.collect()
    assert observed() - start == 101  # a's IDs stay in the total
    b.next_ids(9)
    assert observed() - start == 110


def test_refused_calls_issue_nothing(fake_clock: Any) -> None:
    gen = uid.new_generator(4, clock=fake_clock, sleep=fake_clock.sleep, max_backward_ms=1)
    gen.next_id()
    fake_clock.set_ms(fake_clock.ms - 50)
    try:
        gen.next_id()
    except uid.ClockMovedBackwards:
        pass
    else:
        raise AssertionError("expected ClockMovedBackwards")
    assert gen._issued_total() == 1
