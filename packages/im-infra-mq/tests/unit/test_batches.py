"""The batch-handler flow without a broker: what is retried, what is forwarded, when a list is
finished; which messages a raised exception fails; the limits."""

from __future__ import annotations

from typing import Any

import pytest

from im_infra import clog, mq
from im_infra.mq._internal.batches import batch_flow, failures
from im_infra.mq.batch import check_batch_limits


def _msgs(n: int) -> list[mq.Message]:
    return [mq.Message("t", value=f"m{i}", partition=0, offset=i) for i in range(n)]


def _drive(msgs: list[mq.Message], retry: mq.RetryPolicy | None, replies: list[Any]) -> Any:
    """Run the flow, answering each ask from ``replies``; the asks seen and the outcome."""
    flow = batch_flow(msgs, retry)
    asks = [next(flow)]
    try:
        for reply in replies:
            asks.append(flow.send(reply))
    except StopIteration as done:
        return asks, done.value
    raise AssertionError(f"flow not finished after {replies}: {asks}")


def test_success_finishes_the_list() -> None:
    msgs = _msgs(3)
    asks, outcome = _drive(msgs, None, [{}])
    assert asks == [("call", msgs)]
    assert outcome == (True, [], 1)


def test_failed_part_is_retried_as_a_smaller_list_then_forwarded() -> None:
    msgs = _msgs(4)
    e1, e3, e3b = ValueError("1"), ValueError("3"), ValueError("3b")
    policy = mq.RetryPolicy(max_attempts=3, backoff=0.5, multiplier=2.0)
    asks, outcome = _drive(msgs, policy, [{1: e1, 3: e3}, False, {1: e3b}, False, {0: e3b}])
    assert asks[0] == ("call", msgs)
    assert asks[1] == ("pause", 0.5)
    assert asks[2] == ("call", [msgs[1], msgs[3]])  # only the failed ones, in order
    assert asks[3] == ("pause", 1.0)
    assert asks[4] == ("call", [msgs[3]])  # index 1 of the second list is msgs[3]
    assert outcome == (True, [(msgs[3], e3b)], 3)


def test_without_policy_the_first_failure_is_final() -> None:
    msgs = _msgs(2)
    err = RuntimeError("x")
    _, outcome = _drive(msgs, None, [{0: err, 1: err}])
    assert outcome == (True, [(msgs[0], err), (msgs[1], err)], 1)


def test_abandoned_or_closed_lists_are_not_finished() -> None:
    msgs = _msgs(2)
    assert _drive(msgs, None, [None])[1] == (False, [], 1)
    policy = mq.RetryPolicy(max_attempts=2, backoff=0.1)
    _, outcome = _drive(msgs, policy, [{0: ValueError()}, True])  # closing during the pause
    assert outcome == (False, [], 1)


def test_which_messages_an_exception_fails() -> None:
    plain = RuntimeError("all")
    assert failures(plain, 3) == {0: plain, 1: plain, 2: plain}
    one = ValueError("one")
    named = mq.BatchFailure({1: one})
    assert failures(named, 3) == {1: one}
    # an index out of range (or no index at all) cannot be trusted: the whole list failed
    wrong = mq.BatchFailure({5: one})
    assert failures(wrong, 3) == {0: wrong, 1: wrong, 2: wrong}
    empty = mq.BatchFailure({})
    assert failures(empty, 2) == {0: empty, 1: empty}
    assert str(mq.BatchFailure({0: one, 2: one})) == "2 message(s) of the batch failed"


def test_message_trace_binds_one_message() -> None:
    msg = mq.Message("t", headers={"trace_id": b"t-9"})
    assert clog.trace_id() is None
    with mq.message_trace(msg):
        assert clog.trace_id() == "t-9"
    assert clog.trace_id() is None


@pytest.mark.parametrize(
    ("max_messages", "max_wait", "problem"),
    [
        (0, 0.5, "max_messages"),
        (True, 0.5, "max_messages"),
        (100_001, 0.5, "max_messages"),
        (10, -0.1, "max_wait"),
        (10, 61, "max_wait"),
        (10, "1", "max_wait"),
    ],
)
def test_limits(max_messages: Any, max_wait: Any, problem: str) -> None:
    with pytest.raises(mq.ConfigError, match=problem):
        check_batch_limits(max_messages, max_wait)
    check_batch_limits(1, 0)
    check_batch_limits(500, 2.5)
