"""Ordered-concurrency bookkeeping: chains by key, the start gate (offsets: test_offsets.py)."""

from __future__ import annotations

import random

from im_infra.mq._internal.offsets import committable
from im_infra.mq._internal.ordering import StartGate, chains

P0, P1 = ("t", 0), ("t", 1)


def test_chains_keep_order_per_key_and_start_with_the_earliest() -> None:
    assert chains(["a", "b", "a", "c", "b", "a"]) == [[0, 2, 5], [1, 4], [3]]
    assert chains([]) == []


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
