"""The consumer's offset bookkeeping (pure): runs of finished messages per partition, and
what may be stored when a batch's finished flags are not a prefix."""

from __future__ import annotations

import itertools
import random

import confluent_kafka
import pytest

from im_infra.mq._internal.offsets import (
    add_finished,
    add_run,
    committable,
    committable_runs,
    runs_of,
)

P0, P1 = ("t", 0), ("t", 1)


def kmsg(topic: str, partition: int, offset: int) -> confluent_kafka.Message:
    return confluent_kafka.Message(topic=topic, partition=partition, offset=offset)


def test_add_run_extends_a_partition_and_ignores_empty_runs() -> None:
    done: dict[tuple[str, int], list[int]] = {}
    add_run(done, "t", 0, 0, 99)
    assert done == {}
    add_run(done, "t", 0, 3, 12)
    add_run(done, "t", 1, 1, 4)
    add_run(done, "t", 0, 2, 14)
    assert done == {P0: [5, 14], P1: [1, 4]}


def test_add_finished_counts_interleaved_runs_of_a_slice() -> None:
    msgs = [kmsg("t", 0, 10), kmsg("t", 0, 11), kmsg("t", 1, 7), kmsg("u", 0, 3), kmsg("t", 0, 12)]
    done: dict[tuple[str, int], list[int]] = {}
    add_finished(done, msgs, 1, 5)  # the first message is not finished yet: not counted
    assert done == {P0: [2, 12], P1: [1, 7], ("u", 0): [1, 3]}
    add_finished(done, msgs, 0, 0)
    assert done == {P0: [2, 12], P1: [1, 7], ("u", 0): [1, 3]}


def test_add_finished_in_pieces_equals_all_at_once() -> None:
    rng = random.Random(3)
    offsets = {0: 0, 1: 100}
    msgs = []
    for _ in range(200):
        p = rng.choice([0, 1])
        offsets[p] += 1
        msgs.append(kmsg("t", p, offsets[p]))
    whole: dict[tuple[str, int], list[int]] = {}
    add_finished(whole, msgs, 0, len(msgs))
    pieces: dict[tuple[str, int], list[int]] = {}
    cuts = sorted({0, len(msgs), *(rng.randrange(len(msgs)) for _ in range(9))})
    for start, end in itertools.pairwise(cuts):
        add_finished(pieces, msgs, start, end)
    in_p0 = sum(1 for m in msgs if m.partition() == 0)
    assert pieces == whole == {P0: [in_p0, offsets[0]], P1: [200 - in_p0, offsets[1]]}


def test_runs_of_positions() -> None:
    assert runs_of([("t", 0, 5), ("t", 1, 2), ("t", 0, 6)]) == {P0: [2, 6], P1: [1, 2]}
    assert runs_of([]) == {}


def test_committable_runs_matches_committable() -> None:
    positions = [(P0, 10), (P1, 5), (P0, 11), (P1, 6)]
    assert committable_runs(positions, [True, True, True, False]) == {P0: [2, 11], P1: [1, 5]}


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
