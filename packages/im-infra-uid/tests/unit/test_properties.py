"""Property-based tests (hypothesis): the layout round-trips and orders, and a generator driven by
an arbitrary clock never issues a duplicate or a smaller ID."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from im_infra import uid

NS_PER_MS = 1_000_000
T0_MS = 1_767_225_600_000

fields = st.tuples(
    st.integers(uid.DEFAULT_EPOCH_MS, uid.DEFAULT_EPOCH_MS + uid.MAX_TIMESTAMP_MS),
    st.integers(0, uid.MAX_WORKER_ID),
    st.integers(0, uid.MAX_SEQUENCE),
)


@given(fields)
def test_compose_parse_round_trip(f: tuple[int, int, int]) -> None:
    value = uid.compose(*f)
    assert 0 <= value <= uid.MAX_ID
    assert uid.parse(value) == f


@given(fields, fields)
def test_ids_order_like_their_fields(a: tuple[int, int, int], b: tuple[int, int, int]) -> None:
    assert (uid.compose(*a) < uid.compose(*b)) == (a < b)


class SteppedClock:
    """ns clock advancing 50 us per read (so waits end), moved by the test in whole ms."""

    def __init__(self) -> None:
        self.now_ns = T0_MS * NS_PER_MS

    def __call__(self) -> int:
        self.now_ns += 50_000
        return self.now_ns

    def sleep(self, seconds: float) -> None:
        self.now_ns += round(seconds * 1e9)


steps = st.lists(
    st.tuples(st.integers(-12, 4), st.sampled_from([1, 1, 1, 7, 5000])), min_size=1, max_size=60
)


@settings(max_examples=150, deadline=None)
@given(steps, st.integers(0, 6))
def test_any_clock_path_never_repeats_or_goes_down(
    path: list[tuple[int, int]], max_backward: int
) -> None:
    clock = SteppedClock()
    gen = uid.new_generator(5, clock=clock, sleep=clock.sleep, max_backward_ms=max_backward)
    last_id = -1
    last_ms = -1  # the last millisecond an ID was issued in
    for move_ms, count in path:
        clock.now_ns += move_ms * NS_PER_MS
        behind = last_ms - (clock.now_ns + 50_000) // NS_PER_MS
        if behind > max_backward:  # beyond the tolerance: raises, whatever the call
            with pytest.raises(uid.ClockMovedBackwards) as info:
                gen.next_id() if count == 1 else gen.next_ids(count)
            assert info.value.backward_ms == behind
            continue
        ids: list[Any] = [gen.next_id()] if count == 1 else gen.next_ids(count)
        assert ids[0] > last_id
        assert all(a < b for a, b in itertools.pairwise(ids))
        stamps = [uid.parse(i).timestamp_ms for i in ids]
        assert stamps[-1] <= clock.now_ns // NS_PER_MS  # never an ID from the future
        last_id, last_ms = ids[-1], stamps[-1]
