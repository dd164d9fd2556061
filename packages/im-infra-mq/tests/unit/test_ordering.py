"""Ordered-concurrency bookkeeping: chains by key, contiguous committable offsets."""

from __future__ import annotations

import random

import pytest

from im_infra.mq._internal.ordering import chains, committable

P0, P1 = ("t", 0), ("t", 1)


def test_chains_keep_order_per_key_and_start_with_the_earliest() -> None:
    assert chains(["a", "b", "a", "c", "b", "a"]) == [[0, 2, 5], [1, 4], [3]]
    assert chains([]) == []


def test_committable_stops_at_the_first_unfinished_message_per_partition() -> None:
    positions = [(P0, 10), (P1, 5), (P0, 11), (P0, 12), (P1, 6)]
    finished = [True, True, False, True, True]
    # P0: 10 done, 11 not -> 12 (done) must not be stored; P1: 5 and 6 done.
    assert committable(positions, finished) == {P0: (1, 10), P1: (2, 6)}


def test_nothing_committable_when_the_first_message_did_not_finish() -> None:
    assert committable([(P0, 3), (P0, 4)], [False, True]) == {}


def test_committable_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="2 positions but 1"):
        committable([(P0, 1), (P0, 2)], [True])
    with pytest.raises(ValueError, match="not rising"):
        committable([(P0, 2), (P0, 2)], [True, True])


def test_committable_never_passes_an_unfinished_offset_randomised() -> None:
    rng = random.Random(7)
    for _ in range(500):
        n = rng.randint(0, 40)
        parts = [rng.choice([P0, P1, ("u", 0)]) for _ in range(n)]
        nxt: dict[tuple[str, int], int] = {}
        positions = []
        for p in parts:
            nxt[p] = nxt.get(p, rng.randint(0, 100)) + rng.randint(1, 3)
            positions.append((p, nxt[p]))
        finished = [rng.random() < 0.8 for _ in range(n)]
        result = committable(positions, finished)
        for p, (count, last) in result.items():
            mine = [(o, f) for (q, o), f in zip(positions, finished, strict=True) if q == p]
            prefix = mine[:count]
            assert all(f for _, f in prefix) and prefix[-1][0] == last
            assert count == len(mine) or not mine[count][1]  # stopped at an unfinished one
        for p in {q for q, _ in positions} - set(result):
            first = next(f for (q, _), f in zip(positions, finished, strict=True) if q == p)
            assert not first
