"""The in-memory broker's core without I/O (mq/_internal/memory_consume.py and
memory_produce.py), stepped by hand: no thread, no event loop, no clock waits. The drivers in
mq.testing only take these steps; the behaviour through them is in test_testing.py and the
contract tests."""

from __future__ import annotations

import pytest

from im_infra import clog, mq
from im_infra.mq._internal.memory import BrokerState
from im_infra.mq._internal.memory_consume import (
    IDLE_WAIT,
    Call,
    ConsumerCore,
    Fetch,
    Flow,
    Pause,
    Step,
    advance,
)
from im_infra.mq._internal.memory_produce import ProducerCore


def _stored(state: BrokerState, *values: bytes, topic: str = "t") -> None:
    for v in values:
        state.append(mq.Message(topic, value=v), None, v)


def _core(state: BrokerState, retry: mq.RetryPolicy | None = None) -> ConsumerCore:
    return ConsumerCore(state, "g", retry=retry, reset="earliest", logger=None)


def _reply_fetch(core: ConsumerCore, flow: Flow, step: Step | None) -> Step | None:
    assert isinstance(step, Fetch)
    return advance(flow, core._fetch(0))


def test_a_handled_message_is_committed_after_the_call_returned() -> None:
    state = BrokerState(1, True)
    _stored(state, b"a")
    core = _core(state)
    flow = core._each_flow(["t"])
    step = advance(flow)  # joins
    assert step == Fetch(IDLE_WAIT)
    step = _reply_fetch(core, flow, step)
    assert isinstance(step, Call) and isinstance(step.arg, mq.Message)
    assert step.arg.value == b"a"
    assert state.groups["g"].committed == {}  # not before the callback returned
    step = advance(flow, None)
    assert isinstance(step, Fetch)
    assert state.groups["g"].committed == {("t", 0): 1}
    core._stop()
    assert advance(flow, None) is None  # closed: the loop ends and leaves the group
    assert state.groups["g"].members == {}


def test_a_failing_message_is_retried_after_a_pause_then_dead_lettered() -> None:
    state = BrokerState(1, True)
    _stored(state, b"a")
    core = _core(state, mq.RetryPolicy(max_attempts=2, backoff=0.5, dead_letter=True))
    flow = core._each_flow(["t"])
    step = _reply_fetch(core, flow, advance(flow))
    assert isinstance(step, Call)
    step = advance(flow, error=ValueError("boom"))
    assert step == Pause(0.5)
    step = advance(flow, False)  # the pause ran out, not closed
    assert isinstance(step, Call)
    step = advance(flow, ValueError("returned, not raised"))  # the seed's Go form fails too
    assert isinstance(step, Fetch)
    (dead,) = [m for name in state.logs if name.endswith(".dlq") for m in state.logs[name][0]]
    assert dead.value == b"a"
    assert dead.headers["dlq_attempts"] == b"2"
    assert state.groups["g"].committed == {("t", 0): 1}
    flow.close()


def test_closing_during_a_retry_pause_leaves_the_message_uncommitted() -> None:
    state = BrokerState(1, True)
    _stored(state, b"a")
    core = _core(state, mq.RetryPolicy(max_attempts=3, backoff=0.1))
    flow = core._each_flow(["t"])
    step = _reply_fetch(core, flow, advance(flow))
    step = advance(flow, error=RuntimeError("boom"))
    assert isinstance(step, Pause)
    core._stop()
    assert advance(flow, True) is None  # closed meanwhile: not finished, loop over
    assert state.groups["g"].committed == {}
    assert state.groups["g"].members == {}


def test_the_trace_id_is_bound_while_a_message_is_in_hand_and_reset_after() -> None:
    state = BrokerState(1, True)
    state.append(mq.Message("t", value=b"a", headers={"trace_id": b"t-9"}), None, b"a")
    core = _core(state)
    flow = core._each_flow(["t"])
    step = _reply_fetch(core, flow, advance(flow))
    assert isinstance(step, Call)
    assert clog.trace_id() == "t-9"
    advance(flow, None)
    assert clog.trace_id() is None
    flow.close()


def test_a_batch_is_gathered_until_its_deadline_then_the_failed_part_is_retried() -> None:
    state = BrokerState(1, True)
    _stored(state, b"a", b"b")
    core = _core(state, mq.RetryPolicy(max_attempts=2, backoff=0.1, dead_letter=False))
    flow = core._batch_flow(["t"], 10, 0.0)
    step = _reply_fetch(core, flow, advance(flow))  # the first message
    assert step == Fetch(0)  # max_wait 0: the deadline has passed, one last look
    step = advance(flow, core._fetch(0))  # b
    assert step == Fetch(0)
    step = advance(flow, None)  # nothing more, past the deadline: the list is complete
    assert isinstance(step, Call) and isinstance(step.arg, list)
    assert [m.value for m in step.arg] == [b"a", b"b"]
    step = advance(flow, error=mq.BatchFailure({1: ValueError("b is bad")}))
    assert step == Pause(0.1)
    step = advance(flow, False)
    assert isinstance(step, Call) and isinstance(step.arg, list)
    assert [m.value for m in step.arg] == [b"b"]  # only the failed one again
    assert isinstance(advance(flow, None), Fetch)
    assert state.groups["g"].committed == {("t", 0): 2}
    flow.close()


def test_bad_batch_limits_raise_before_joining() -> None:
    state = BrokerState(1, True)
    core = _core(state)
    with pytest.raises(mq.ConfigError):
        core._batch_flow(["t"], 0, 0.1)
    assert "g" not in state.groups


def test_a_message_handed_out_by_the_iterator_is_committed_when_the_next_is_asked() -> None:
    state = BrokerState(1, True)
    _stored(state, b"a", b"b")
    core = _core(state)
    flow = core._iterate_flow(["t"])
    step = _reply_fetch(core, flow, advance(flow))
    assert isinstance(step, Call)
    step = _reply_fetch(core, flow, advance(flow))  # asked for the next: a is committed
    assert state.groups["g"].committed == {("t", 0): 1}
    assert isinstance(step, Call)
    flow.close()  # the loop left while b is in hand: b stays uncommitted
    assert state.groups["g"].committed == {("t", 0): 1}
    assert state.groups["g"].members == {}


def test_the_producer_core_refuses_when_shut_before_looking_at_the_message() -> None:
    core = ProducerCore(BrokerState(1, True), None)
    assert core.shut() and not core.shut()
    with pytest.raises(mq.ProducerClosedError):
        core.accept(mq.Message("t", value=123), None)  # type: ignore[arg-type]


def test_the_producer_core_counts_reports_and_binds_the_senders_trace_id() -> None:
    state = BrokerState(1, True)
    core = ProducerCore(state, None)
    seen: list[tuple[mq.MQError | None, str | None]] = []
    with clog.trace_context("t-1"):
        report = core.accept(
            mq.Message("t", value=b"v"), lambda err: seen.append((err, clog.trace_id()))
        )
    assert core.pending == 1
    assert state.logs["t"][0][0].headers["trace_id"] == b"t-1"
    core.deliver(report)
    assert seen == [(None, "t-1")]
    assert core.pending == 0
    assert clog.trace_id() is None
