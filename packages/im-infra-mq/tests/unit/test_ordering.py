"""Ordered-concurrency bookkeeping: chains by key, contiguous committable offsets."""

from __future__ import annotations

import random

import pytest

from im_infra.mq._internal.ordering import StartGate, chains, committable

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


def test_start_gate_after_a_stop_only_closes_gaps() -> None:
    stopping = False
    gate = StartGate(lambda: stopping)
    assert gate.may_start(P0, 5)  # key A's chain reached offset 5
    assert gate.may_start(P1, 2)
    stopping = True
    assert gate.may_start(P0, 3)  # key B's message 3 lies below 5: it closes the gap
    assert gate.may_start(P0, 5)  # what already started may go on (asked again: still fine)
    assert not gate.may_start(P0, 6)  # nothing new beyond what ran
    assert not gate.may_start(P1, 3)
    assert not gate.may_start(("t", 2), 0)  # a partition that never started stays untouched


def test_start_gate_with_a_stop_mid_batch_leaves_a_committable_prefix_of_what_ran() -> None:
    """Chains of random keys over two partitions, run round-robin; a stop comes after a random
    number of starts. Every message that ran must lie in its partition's committable run, so
    a graceful stop leaves nothing that ran to be delivered again."""
    rng = random.Random(11)
    for _ in range(300):
        n = rng.randint(1, 40)
        keys = [(rng.choice([0, 1]), rng.randint(0, 5)) for _ in range(n)]
        positions: list[tuple[tuple[str, int], int]] = []
        nxt = {0: 0, 1: 0}
        for part, _key in keys:
            positions.append((("t", part), nxt[part]))
            nxt[part] += 1
        todo = [list(c) for c in chains(keys)]
        stop_after = rng.randint(0, n)
        started = [0]
        gate = StartGate(lambda s=started, at=stop_after: s[0] >= at)  # type: ignore[misc]
        finished = [False] * n
        while any(todo):
            chain = rng.choice([c for c in todo if c])
            i = chain[0]
            if not gate.may_start(*positions[i]):
                chain.clear()  # the runner breaks off this key
                continue
            chain.pop(0)
            started[0] += 1
            finished[i] = True
        result = committable(positions, finished)
        for (where, offset), done in zip(positions, finished, strict=True):
            if done:
                assert where in result and offset <= result[where][1], (positions, finished)
