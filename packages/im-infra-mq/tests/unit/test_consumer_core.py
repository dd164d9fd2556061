"""The consumer's per-message logic (at-least-once storing, retries, DLQ, trace binding), with a
stand-in for the librdkafka handle: no broker needed."""

from __future__ import annotations

import asyncio
import threading
from typing import Any, cast

import confluent_kafka
import pytest

from im_infra import clog
from im_infra.mq import DeliveryError, KafkaConsumer, KafkaProducer, Message, RetryPolicy
from im_infra.mq._internal.consumer_core import ConsumerCore
from im_infra.mq._internal.handoff import AbortedError, BatchRunner, CallbackSlot
from im_infra.mq._internal.kafka_consumer import to_message
from im_infra.mq._internal.offsets import Runs, add_finished

PROPS = {"bootstrap.servers": "127.0.0.1:9", "group.id": "unit"}


class FakeRdk:
    """Records stored offsets as ``(partition, offset)``; refuses the ``revoked`` partitions."""

    def __init__(self) -> None:
        self.stored: list[tuple[int, int]] = []
        self.revoked: set[int] = set()

    def store_offsets(self, offsets: list[confluent_kafka.TopicPartition]) -> None:
        for tp in offsets:
            if tp.partition in self.revoked:
                raise confluent_kafka.KafkaException(
                    confluent_kafka.KafkaError(confluent_kafka.KafkaError._STATE)
                )
            self.stored.append((tp.partition, tp.offset))


class FakeDLQ:
    def __init__(self, fail: bool = False) -> None:
        self.sent: list[Message] = []
        self.fail = fail

    def send_sync(self, msg: Message, timeout: float | None = None) -> None:
        if self.fail:
            raise DeliveryError("broker down", code="_TRANSPORT")
        self.sent.append(msg)

    def close(self) -> None:
        pass


def kmsg(
    offset: int,
    headers: list[tuple[str, str | bytes | None]] | None = None,
    partition: int = 2,
) -> Any:
    return confluent_kafka.Message(
        topic="orders",
        partition=partition,
        offset=offset,
        key=b"k",
        value=f"v{offset}".encode(),
        headers=headers,
        timestamp=(confluent_kafka.TIMESTAMP_CREATE_TIME, 1_700_000_000_000),
    )


@pytest.fixture
def make() -> Any:
    made: list[tuple[ConsumerCore, Any]] = []

    def build(retry: RetryPolicy | None = None, dlq: FakeDLQ | None = None) -> ConsumerCore:
        producer = cast(KafkaProducer, dlq)  # duck-typed: send_sync and close
        core = ConsumerCore(PROPS, retry=retry, dlq_producer=(lambda: producer) if dlq else None)
        made.append((core, core.client._rdk))
        core.client._rdk = FakeRdk()  # type: ignore[assignment]
        return core

    yield build
    for core, real in made:
        core.client._rdk = real


def rdk(core: ConsumerCore) -> Any:
    """The stand-in librdkafka handle under the core's adapter."""
    return core.client._rdk


def consume(core: ConsumerCore, batch: list[Any], handler: Any) -> None:
    """One polled batch through the blocking consumer's runner (the handler wrapped as
    subscribe wraps it)."""
    core.consume_batch(batch, handler, core.handling.wrap(handler))


def test_to_message() -> None:
    msg = to_message(kmsg(7, [("trace_id", b"abc"), ("empty", None)]))
    assert msg == Message(
        topic="orders",
        key=b"k",
        value=b"v7",
        headers={"trace_id": b"abc", "empty": b""},
        partition=2,
        offset=7,
        timestamp_ms=1_700_000_000_000,
    )


def test_to_message_sets_every_field() -> None:
    """to_message sets the slots itself (no __init__): each field of Message must be set, and
    the message must behave as a constructed one (equality, repr, replace, mutable headers)."""
    import dataclasses

    msg = to_message(kmsg(3))
    for f in dataclasses.fields(Message):
        assert hasattr(msg, f.name), f"to_message does not set Message.{f.name}"
    assert msg.headers == {}
    msg.headers["x"] = b"1"  # its own dict, not shared with the next message
    assert to_message(kmsg(4)).headers == {}
    assert dataclasses.replace(msg, offset=9).offset == 9
    assert "offset=3" in repr(msg)
    no_ts = confluent_kafka.Message(topic="t", partition=0, offset=0, timestamp=(0, -1))
    assert to_message(no_ts).timestamp_ms is None


def consumed_and_plain() -> tuple[Message, Message]:
    """A consumed message (timestamp not read yet) and a plain one with the same values."""
    consumed = to_message(kmsg(7, [("trace_id", b"abc")]))
    plain = Message("orders", b"k", b"v7", {"trace_id": b"abc"}, 2, 7, 1_700_000_000_000)
    return consumed, plain


def test_consumed_message_is_a_message_with_readable_and_writable_fields() -> None:
    import dataclasses

    consumed, plain = consumed_and_plain()
    assert isinstance(consumed, Message)
    for f in dataclasses.fields(Message):
        assert getattr(consumed, f.name) == getattr(plain, f.name), f.name
    changed: dict[str, object] = {"topic": "x", "key": "k2", "value": b"", "partition": 5}
    changed |= {"headers": {"a": b"1"}, "offset": 8, "timestamp_ms": 3}
    for name, value in changed.items():
        fresh, _ = consumed_and_plain()
        setattr(fresh, name, value)  # before the lazy timestamp was read, too
        assert getattr(fresh, name) == value, name
    unread, _ = consumed_and_plain()
    unread.timestamp_ms = None
    assert unread.timestamp_ms is None  # set wins over the confluent message's timestamp


def test_consumed_message_equals_a_plain_one_both_ways() -> None:
    consumed, plain = consumed_and_plain()
    assert consumed == plain
    assert plain == consumed
    assert (consumed != plain, plain != consumed) == (False, False)
    assert consumed == to_message(kmsg(7, [("trace_id", b"abc")]))
    other, _ = consumed_and_plain()
    other.timestamp_ms = 1
    assert other != plain
    assert plain != other
    assert consumed != cast(Message, "orders")
    with pytest.raises(TypeError):
        hash(consumed)  # unhashable, as a plain Message


def test_consumed_message_repr_copy_pickle_and_dataclass_helpers_as_a_plain_one() -> None:
    import copy
    import dataclasses
    import pickle

    consumed, plain = consumed_and_plain()
    assert repr(consumed) == repr(plain)
    assert repr(consumed).startswith("Message(")
    for duplicate in (copy.copy(consumed), copy.deepcopy(consumed)):
        assert type(duplicate) is Message
        assert duplicate == plain
    shallow = copy.copy(consumed)
    assert shallow.headers is consumed.headers  # shallow, as copy.copy of a plain one
    unpickled = pickle.loads(pickle.dumps(consumed))  # noqa: S301 - our own bytes
    assert type(unpickled) is Message
    assert unpickled == plain
    assert dataclasses.fields(consumed) == dataclasses.fields(plain)
    assert dataclasses.asdict(consumed) == dataclasses.asdict(plain)
    assert dataclasses.astuple(consumed) == dataclasses.astuple(plain)
    replaced = dataclasses.replace(consumed, value=b"new")
    assert replaced == dataclasses.replace(plain, value=b"new")
    assert repr(replaced) == repr(dataclasses.replace(plain, value=b"new"))
    assert isinstance(replaced, Message)


def test_offset_stored_after_success_and_after_logged_failure(make: Any) -> None:
    consumer = make()
    calls: list[int | None] = []

    def handler(msg: Message) -> None:
        calls.append(msg.offset)
        if msg.offset == 1:
            raise ValueError("bad")

    consume(consumer, [kmsg(off) for off in range(3)], handler)
    assert calls == [0, 1, 2]
    # The seed: log the error and go on. Stored: the offset after the partition's last message.
    assert rdk(consumer).stored == [(2, 3)]


def test_offsets_stored_per_partition_and_counted(make: Any) -> None:
    consumer = make()
    batch = [kmsg(10, partition=0), kmsg(5, partition=1), kmsg(11, partition=0)]
    consume(consumer, batch, lambda m: None)
    assert sorted(rdk(consumer).stored) == [(0, 12), (1, 6)]
    assert consumer.metrics.consumed_snapshot() == {
        ("unit", "orders", 0): 2,
        ("unit", "orders", 1): 1,
    }


def test_revoked_partition_is_neither_stored_nor_counted(make: Any) -> None:
    consumer = make()
    rdk(consumer).revoked = {1}
    consume(consumer, [kmsg(3, partition=0), kmsg(4, partition=1)], lambda m: None)
    assert rdk(consumer).stored == [(0, 4)]
    assert consumer.metrics.consumed_snapshot() == {("unit", "orders", 0): 1}


def test_stop_mid_batch_stores_what_was_finished(make: Any) -> None:
    consumer = make()
    seen: list[int | None] = []

    def handler(msg: Message) -> None:
        seen.append(msg.offset)
        if msg.offset == 1:
            consumer.request_stop()  # the message in hand is finished, the rest is not handled

    consume(consumer, [kmsg(off) for off in range(4)], handler)
    assert seen == [0, 1]
    assert rdk(consumer).stored == [(2, 2)]


def test_offsets_stored_while_a_slow_batch_is_in_progress(
    make: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    consumer = make()
    clock = [0.0]
    monkeypatch.setattr("im_infra.mq._internal.consumer_core.time.monotonic", lambda: clock[0])
    stored_during: list[list[tuple[int, int]]] = []

    def handler(msg: Message) -> None:
        stored_during.append(list(rdk(consumer).stored))
        clock[0] += 0.01  # each message takes 10 ms: a 200-message batch takes 2 s

    consume(consumer, [kmsg(off) for off in range(200)], handler)
    stored = rdk(consumer).stored
    # Stored in steps of at most ~100 ms of work (plus the clock-check stride), not only at the end.
    assert len(stored) >= 10
    assert stored == sorted(stored)
    assert stored[-1] == (2, 200)
    assert [off for _, off in stored[:-1]] == sorted({off for _, off in stored[:-1]})
    assert all(
        off - prev <= 32 for (_, prev), (_, off) in zip([(2, 0), *stored], stored, strict=False)
    )
    assert stored_during[100][-1][1] <= 100  # a message never sees its own offset stored


def test_offsets_stored_while_a_slow_batch_of_short_runs_is_in_progress(
    make: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Partitions alternating every message (runs shorter than the clock-check stride): the
    clock is also checked when the partition changes, so offsets are still stored mid-batch."""
    consumer = make()
    clock = [0.0]
    monkeypatch.setattr("im_infra.mq._internal.consumer_core.time.monotonic", lambda: clock[0])

    def handler(msg: Message) -> None:
        clock[0] += 0.01

    batch = [kmsg(off // 2, partition=off % 2) for off in range(200)]
    consume(consumer, batch, handler)
    stored = rdk(consumer).stored
    assert len(stored) >= 20  # ~every 100 ms, both partitions; not only at the end
    assert [off for p, off in stored if p == 0] == sorted({off for p, off in stored if p == 0})
    assert stored[-2:] in ([(0, 100), (1, 100)], [(1, 100), (0, 100)])


def test_fast_batch_stores_once_at_the_end(make: Any) -> None:
    consumer = make()
    consume(consumer, [kmsg(off) for off in range(200)], lambda m: None)
    assert rdk(consumer).stored == [(2, 200)]


def test_trace_id_bound_only_while_handling(make: Any) -> None:
    consumer = make()
    seen: list[str | None] = []
    batch = [kmsg(0, [("trace_id", b"t-9")]), kmsg(1), kmsg(2, [("app", b"x")])]
    consume(consumer, batch, lambda m: seen.append(clog.trace_id()))
    assert seen == ["t-9", None, None]
    assert clog.trace_id() is None


def test_retry_then_success(make: Any) -> None:
    consumer = make(retry=RetryPolicy(max_attempts=3, backoff=0, dead_letter=False))
    attempts: list[int] = []

    def handler(msg: Message) -> None:
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError("transient")

    consume(consumer, [kmsg(5)], handler)
    assert len(attempts) == 3
    assert rdk(consumer).stored == [(2, 6)]


def test_exhausted_retries_go_to_the_dead_letter_topic(make: Any) -> None:
    dlq = FakeDLQ()
    consumer = make(retry=RetryPolicy(max_attempts=2, backoff=0), dlq=dlq)

    def handler(msg: Message) -> None:
        raise RuntimeError("poison")

    consume(consumer, [kmsg(4, [("app", b"1")])], handler)
    [dead] = dlq.sent
    assert dead.topic == "orders.dlq"
    assert dead.key == b"k"
    assert dead.value == b"v4"
    assert dead.headers["app"] == b"1"
    assert dead.headers["dlq_original_topic"] == b"orders"
    assert dead.headers["dlq_original_offset"] == b"4"
    assert dead.headers["dlq_original_partition"] == b"2"
    assert dead.headers["dlq_attempts"] == b"2"
    assert dead.headers["dlq_error"] == b"RuntimeError: poison"
    # 0.1's names, still written for one version
    assert dead.headers["dlq_topic"] == b"orders"
    assert (dead.headers["dlq_partition"], dead.headers["dlq_offset"]) == (b"2", b"4")
    assert rdk(consumer).stored == [(2, 5)]


def test_failed_dead_letter_write_is_logged_and_skipped(make: Any) -> None:
    consumer = make(retry=RetryPolicy(max_attempts=1), dlq=FakeDLQ(fail=True))
    consume(consumer, [kmsg(3)], lambda m: 1 / 0)
    assert rdk(consumer).stored == [(2, 4)]


def test_close_during_retry_backoff_leaves_the_message_unstored(make: Any) -> None:
    consumer = make(retry=RetryPolicy(max_attempts=5, backoff=60, dead_letter=False))
    failing = threading.Event()

    def handler(msg: Message) -> None:
        failing.set()
        raise ConnectionError("down")

    worker = threading.Thread(target=consume, args=(consumer, [kmsg(8)], handler))
    worker.start()
    assert failing.wait(10)
    consumer.request_stop()  # wakes the back-off wait
    worker.join(10)
    assert not worker.is_alive()
    assert rdk(consumer).stored == []


def test_aborted_message_is_not_stored(make: Any) -> None:
    consumer = make()

    def handler(msg: Message) -> None:
        if msg.offset == 1:
            consumer.request_stop()
            raise AbortedError("iteration abandoned")

    consume(consumer, [kmsg(0), kmsg(1), kmsg(2)], handler)
    assert rdk(consumer).stored == [(2, 1)]  # offset 0 finished, offset 1 aborted


def test_dead_letter_needs_a_producer() -> None:
    from im_infra.mq import ConfigError

    with pytest.raises(ConfigError, match="dead-letter"):
        KafkaConsumer(PROPS, retry=RetryPolicy())


def test_subscribe_validates_topics_and_closed_state(make: Any) -> None:
    from im_infra.mq import ConsumerError

    consumer = make()
    with pytest.raises(ConsumerError, match="at least one topic"):
        consumer.run([], lambda m: None)
    consumer.request_stop()
    with pytest.raises(ConsumerError, match="closed"):
        consumer.run(["t"], lambda m: None)


# ------------------------------------------------------------------ batches handed to a runner
def test_handed_batch_stores_only_what_the_runner_finished(make: Any) -> None:
    consumer = make()
    hops: list[list[int]] = []

    def runner(kmsgs: list[Any], done: Runs) -> tuple[int, Exception | None]:
        hops.append([k.offset() for k in kmsgs])
        add_finished(done, kmsgs, 0, 2)
        return 2, None  # stopped after two (close, cancellation)

    consumer.consume_handed([kmsg(o) for o in (5, 6, 7, 8)], runner, lambda m: None)
    assert hops == [[5, 6, 7, 8]]  # one hop for the whole batch
    assert rdk(consumer).stored == [(2, 7)]  # 5 and 6 finished; 7 is delivered again
    assert consumer.closed  # a short run without a failure means stop


def test_handed_batch_retries_a_failure_in_order_then_goes_on(make: Any) -> None:
    consumer = make(retry=RetryPolicy(max_attempts=3, backoff=0, dead_letter=False))
    order: list[str] = []
    hops: list[list[int]] = []

    def runner(kmsgs: list[Any], done: Runs) -> tuple[int, Exception | None]:
        hops.append([k.offset() for k in kmsgs])
        for i, k in enumerate(kmsgs):
            order.append(f"run{k.offset()}")
            if k.offset() == 2 and len(hops) == 1:
                add_finished(done, kmsgs, 0, i)
                return i, RuntimeError("first attempt")  # logged by the runner
        add_finished(done, kmsgs, 0, len(kmsgs))
        return len(kmsgs), None

    def retry(msg: Message) -> None:  # the core's retries go through the per-message path
        order.append(f"retry{msg.offset}")

    batch = [kmsg(o, partition=p) for o, p in ((1, 0), (2, 0), (3, 0), (9, 1))]
    consumer.consume_handed(batch, runner, retry)
    assert order == ["run1", "run2", "retry2", "run3", "run9"]
    assert hops == [[1, 2, 3, 9], [3, 9]]
    assert sorted(rdk(consumer).stored) == [(0, 4), (1, 10)]
    assert not consumer.closed


def test_handed_batch_leaves_error_events_out(make: Any) -> None:
    consumer = make()
    seen: list[int] = []
    eof = confluent_kafka.Message(
        topic="orders", partition=2, offset=3, error=confluent_kafka.KafkaError(-191)
    )

    def runner(kmsgs: list[Any], done: Runs) -> tuple[int, Exception | None]:
        seen.extend(k.offset() for k in kmsgs)
        add_finished(done, kmsgs, 0, len(kmsgs))
        return len(kmsgs), None

    consumer.consume_handed([kmsg(1), eof, kmsg(2)], runner, lambda m: None)
    assert seen == [1, 2]
    assert rdk(consumer).stored == [(2, 3)]


def test_batch_runner_on_a_loop_stores_what_finished_and_retries_in_order(make: Any) -> None:
    """The asyncio consumer's runner: one hop per batch; it counts the finished messages' runs
    itself (from the converted messages); a failure stops the batch for the core's retries."""
    core = make(retry=RetryPolicy(max_attempts=2, backoff=0, dead_letter=False))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        order: list[str] = []

        async def callback(msg: Message) -> None:
            order.append(f"run{msg.offset}")
            if msg.offset == 12 and "retry12" not in order:
                raise ValueError("first attempt")

        def retry(msg: Message) -> None:  # the retries' per-message path
            order.append(f"retry{msg.offset}")

        runner = BatchRunner(loop, callback, core, CallbackSlot())
        done: Runs = {}
        batch = [kmsg(10, partition=0), kmsg(11, partition=0), kmsg(5, partition=1)]
        batch += [kmsg(12, partition=0), kmsg(6, partition=1)]
        finished, failure = runner(batch, done)
        assert (finished, type(failure)) == (3, ValueError)
        assert done == {("orders", 0): [2, 11], ("orders", 1): [1, 5]}

        order.clear()
        core.consume_handed(batch, runner, retry)
        assert order == ["run10", "run11", "run5", "run12", "retry12", "run6"]
        assert sorted(rdk(core).stored) == [(0, 13), (1, 7)]
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
