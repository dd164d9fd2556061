"""One set of behaviour tests, run against ``mq.testing.MemoryBroker`` and the real broker.

The memory half needs no server (``pytest packages/im-infra-mq/tests/integration/test_mq_contract.py
-k
memory``); the kafka half uses ``$IM_INFRA_KAFKA_BROKERS``. A difference between the two is a
bug in the fake.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator

import pytest

from im_infra import clog, mq
from im_infra.clog.testing import capture_logs
from im_infra.mq.testing import MemoryBroker

#: Fast group timings for the local broker (as in
# packages/im-infra-mq/tests/integration/conftest.py).
_GROUP = {"sessionTimeoutMs": 6000, "heartbeatIntervalMs": 1500, "autoOffsetReset": "earliest"}


class Backend:
    """What a test needs from either backend."""

    def topic(self, partitions: int = 1) -> str:
        raise NotImplementedError

    def producer(self) -> mq.Producer:
        raise NotImplementedError

    def consumer(
        self,
        group: str,
        retry: mq.RetryPolicy | None = None,
        retry_topics: mq.RetryTopicsConfig | None = None,
    ) -> mq.Consumer:
        raise NotImplementedError

    def async_producer(self) -> mq.AsyncProducer:
        raise NotImplementedError

    def async_consumer(
        self, group: str, retry_topics: mq.RetryTopicsConfig | None = None
    ) -> mq.AsyncConsumer:
        raise NotImplementedError

    def close(self) -> None:
        return


class Memory(Backend):
    def __init__(self) -> None:
        self.broker = MemoryBroker()

    def topic(self, partitions: int = 1) -> str:
        name = f"c-{uuid.uuid4().hex[:10]}"
        self.broker.create_topic(name, partitions)
        return name

    def producer(self) -> mq.Producer:
        return self.broker.producer()

    def consumer(
        self,
        group: str,
        retry: mq.RetryPolicy | None = None,
        retry_topics: mq.RetryTopicsConfig | None = None,
    ) -> mq.Consumer:
        return self.broker.consumer(
            group, retry=retry, auto_offset_reset="earliest", retry_topics=retry_topics
        )

    def async_producer(self) -> mq.AsyncProducer:
        return self.broker.async_producer()

    def async_consumer(
        self, group: str, retry_topics: mq.RetryTopicsConfig | None = None
    ) -> mq.AsyncConsumer:
        return self.broker.async_consumer(
            group, auto_offset_reset="earliest", retry_topics=retry_topics
        )


class Kafka(Backend):
    def __init__(self, brokers: str) -> None:
        self.brokers = brokers
        self.admin = mq.new_admin_client("mq-contract", common={"brokers": [brokers]})
        self.made: list[str] = []

    def topic(self, partitions: int = 1) -> str:
        name = f"mqc-{uuid.uuid4().hex[:10]}"
        self.admin.create_topic(name, partitions, 1)
        self.made.append(name)
        return name

    def producer(self) -> mq.Producer:
        return mq.new_producer("mq-contract", common={"brokers": [self.brokers]})

    def consumer(
        self,
        group: str,
        retry: mq.RetryPolicy | None = None,
        retry_topics: mq.RetryTopicsConfig | None = None,
    ) -> mq.Consumer:
        return mq.new_consumer(
            "mq-contract",
            group,
            retry=retry,
            common={"brokers": [self.brokers]},
            consumer=_consumer_section(retry_topics),
        )

    def async_producer(self) -> mq.AsyncProducer:
        return mq.new_async_producer("mq-contract", common={"brokers": [self.brokers]})

    def async_consumer(
        self, group: str, retry_topics: mq.RetryTopicsConfig | None = None
    ) -> mq.AsyncConsumer:
        return mq.new_async_consumer(
            "mq-contract",
            group,
            common={"brokers": [self.brokers]},
            consumer=_consumer_section(retry_topics),
        )

    def close(self) -> None:
        existing = self.admin.list_topics()
        for name in self.made:
            # the topic, its dead-letter topic and the retry topics the consumers created
            for topic in (t for t in existing if t == name or t.startswith(name + ".")):
                with contextlib.suppress(mq.TopicNotFoundError):
                    self.admin.delete_topic(topic)
        self.admin.close()


def _consumer_section(retry_topics: mq.RetryTopicsConfig | None) -> dict[str, object]:
    """kafka.yaml's consumer section for a test consumer (``retryTopics`` as in a document)."""
    if retry_topics is None:
        return _GROUP
    return {**_GROUP, "retryTopics": retry_topics.model_dump(by_alias=True)}


@pytest.fixture(params=["memory", "kafka"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    b: Backend = (
        Memory() if request.param == "memory" else Kafka(request.getfixturevalue("kafka_brokers"))
    )
    yield b
    b.close()


def group() -> str:
    return f"g-{uuid.uuid4().hex[:10]}"


def wait_for(check: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.02)
    pytest.fail(f"{what}: not within {timeout}s")


class Running:
    """A consumer's blocking ``subscribe`` on a thread, recording what it handled."""

    def __init__(
        self,
        consumer: mq.Consumer,
        topics: list[str],
        handler: Callable[[mq.Message], object] | None = None,
    ) -> None:
        self.consumer = consumer
        self.lock = threading.Lock()
        self.seen: list[tuple[mq.Message, str | None]] = []
        self.errors: list[BaseException] = []
        self._handler = handler

        def callback(msg: mq.Message) -> object:
            with self.lock:
                self.seen.append((msg, clog.trace_id()))
            return None if self._handler is None else self._handler(msg)

        def run() -> None:
            try:
                consumer.subscribe(topics, callback)
            except BaseException as exc:
                self.errors.append(exc)

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def messages(self) -> list[mq.Message]:
        with self.lock:
            return [m for m, _ in self.seen]

    def stop(self) -> None:
        self.consumer.close()
        self.thread.join(30)
        assert not self.thread.is_alive(), "subscribe did not return after close()"
        if self.errors:
            raise self.errors[0]


def crc32_partition(key: bytes, partitions: int) -> int:
    """librdkafka's default partitioner (consistent_random) for a keyed message."""
    return zlib.crc32(key) % partitions


# ------------------------------------------------------------------ tests
def test_keys_map_to_partitions_by_crc32_and_keep_order(backend: Backend) -> None:
    topic = backend.topic(partitions=3)
    keys = [f"user-{i % 7}".encode() for i in range(35)]
    with backend.producer() as producer:
        for i, key in enumerate(keys):
            producer.send(mq.Message(topic, key=key, value=str(i)))
        assert producer.flush(30) == 0
    run = Running(backend.consumer(group()), [topic])
    wait_for(lambda: len(run.messages()) >= 35, what="35 messages")
    run.stop()
    got = run.messages()
    assert len(got) == 35
    for msg in got:
        assert isinstance(msg.key, bytes) and isinstance(msg.value, bytes)
        assert msg.partition == crc32_partition(msg.key, 3), msg.key
        assert msg.timestamp_ms is not None and msg.timestamp_ms > 0
    for key in set(keys):  # per key: the order it was sent in, offsets increasing
        mine = [m for m in got if m.key == key]
        assert [int(m.value) for m in mine] == sorted(int(m.value) for m in mine)  # type: ignore[arg-type]
        offsets = [m.offset for m in mine]
        assert offsets == sorted(offsets)  # type: ignore[type-var]


def test_headers_and_trace_ids_travel(backend: Backend) -> None:
    topic = backend.topic()
    reports: list[tuple[mq.MQError | None, str | None]] = []
    with backend.producer() as producer:
        with clog.trace_context("t-ctx"):
            producer.send(
                mq.Message(topic, key="k", value="with-trace", headers={"x-app": b"1"}),
                lambda err: reports.append((err, clog.trace_id())),
            )
            producer.send(mq.Message(topic, value=b"own", headers={"trace_id": b"t-own"}))
        producer.send(mq.Message(topic, value=b"none"))
        assert producer.flush(30) == 0
    assert reports == [(None, "t-ctx")]  # delivery callback: sender's trace id bound
    run = Running(backend.consumer(group()), [topic])
    wait_for(lambda: len(run.messages()) >= 3, what="3 messages")
    run.stop()
    by_value = {m.value: (m, tid) for m, tid in run.seen}
    msg, tid = by_value[b"with-trace"]
    assert msg.key == b"k"
    assert msg.headers["x-app"] == b"1" and msg.trace_id == "t-ctx" and tid == "t-ctx"
    assert by_value[b"own"][0].trace_id == "t-own" and by_value[b"own"][1] == "t-own"
    assert by_value[b"none"][0].trace_id is None and by_value[b"none"][1] is None
    assert clog.trace_id() is None


def test_send_sync_and_closed_producer(backend: Backend) -> None:
    topic = backend.topic()
    producer = backend.producer()
    producer.send_sync(mq.Message(topic, value=b"a"), timeout=30)
    producer.close()
    producer.close()  # idempotent
    with pytest.raises(mq.ProducerClosedError):
        producer.send(mq.Message(topic, value=b"b"))


def test_groups_each_get_everything_and_commits_persist(backend: Backend) -> None:
    topic = backend.topic(partitions=2)
    g1, g2 = group(), group()
    with backend.producer() as producer:
        for i in range(6):
            producer.send(mq.Message(topic, key=f"k{i}", value=f"a{i}"))
        assert producer.flush(30) == 0
    r1, r2 = Running(backend.consumer(g1), [topic]), Running(backend.consumer(g2), [topic])
    wait_for(lambda: len(r1.messages()) == 6 and len(r2.messages()) == 6, what="both groups")
    r1.stop()
    r2.stop()
    with backend.producer() as producer:
        producer.send_sync(mq.Message(topic, key="k0", value="b0"), timeout=30)
    again = Running(backend.consumer(g1), [topic])
    wait_for(lambda: len(again.messages()) >= 1, what="the new message")
    time.sleep(1.0)  # anything committed before would come now
    again.stop()
    assert [m.value for m in again.messages()] == [b"b0"]


def test_members_of_a_group_share_the_partitions(backend: Backend) -> None:
    topic = backend.topic(partitions=2)
    g = group()
    a = Running(backend.consumer(g), [topic])
    b = Running(backend.consumer(g), [topic])
    time.sleep(1.0)
    with backend.producer() as producer:
        for i in range(20):
            producer.send(mq.Message(topic, key=f"k{i}", value=f"{i}"))
        assert producer.flush(30) == 0
    values = {f"{i}".encode() for i in range(20)}
    wait_for(
        lambda: {m.value for m in a.messages() + b.messages()} == values,
        timeout=60,
        what="every message handled by the group",
    )
    a.stop()
    b.stop()


def test_failing_callback_is_logged_and_skipped(backend: Backend) -> None:
    topic = backend.topic()
    with backend.producer() as producer:
        producer.send(mq.Message(topic, value=b"bad"))
        producer.send(mq.Message(topic, value=b"good"))
        assert producer.flush(30) == 0

    def handler(msg: mq.Message) -> None:
        if msg.value == b"bad":
            raise ValueError("cannot handle")

    with capture_logs() as logs:
        run = Running(backend.consumer(group()), [topic], handler)
        wait_for(lambda: len(run.messages()) >= 2, what="both messages")
        run.stop()
    assert [m.value for m in run.messages()] == [b"bad", b"good"]
    failed = [r for r in logs if r["msg"] == "consume callback failed"]
    assert len(failed) == 1
    assert failed[0]["level"] == "error" and failed[0]["fields"]["topic"] == topic
    assert failed[0]["error"]["type"] == "ValueError"


def test_returned_exception_counts_as_a_failure(backend: Backend) -> None:
    topic = backend.topic()
    dlq = topic + mq.DLQ_SUFFIX
    if isinstance(backend, Kafka):
        backend.admin.create_topic(dlq, 1, 1)
    with backend.producer() as producer:
        producer.send_sync(mq.Message(topic, value=b"m"), timeout=30)
    policy = mq.RetryPolicy(max_attempts=2, backoff=0.01)
    run = Running(backend.consumer(group(), retry=policy), [topic], lambda m: ValueError("no"))
    dead = Running(backend.consumer(group()), [dlq])
    wait_for(lambda: len(dead.messages()) >= 1, what="the dead letter")
    run.stop()
    dead.stop()
    assert len(run.messages()) == 2
    assert mq.read_dead_letter(dead.messages()[0]).error == "ValueError: no"


def test_retry_then_dead_letter(backend: Backend) -> None:
    topic = backend.topic()
    dlq = topic + mq.DLQ_SUFFIX
    if isinstance(backend, Kafka):
        backend.admin.create_topic(dlq, 1, 1)
    with backend.producer() as producer, clog.trace_context("t-dlq"):
        producer.send_sync(mq.Message(topic, key=b"k", value=b"poison"), timeout=30)
    policy = mq.RetryPolicy(max_attempts=3, backoff=0.01, multiplier=1.0)

    def handler(msg: mq.Message) -> None:
        raise RuntimeError("always")

    run = Running(backend.consumer(group(), retry=policy), [topic], handler)
    dead = Running(backend.consumer(group()), [dlq])
    wait_for(lambda: len(dead.messages()) >= 1, what="the dead letter")
    run.stop()
    dead.stop()
    assert len(run.messages()) == 3  # max_attempts calls
    (letter,) = dead.messages()
    assert letter.key == b"k" and letter.value == b"poison"
    info = mq.read_dead_letter(letter)
    assert (info.original_topic, info.original_offset, info.attempts) == (topic, 0, 3)
    assert info.error == "RuntimeError: always"
    assert letter.trace_id == "t-dlq"


def test_message_in_hand_at_close_is_delivered_again(backend: Backend) -> None:
    """At-least-once: a message whose handling was cut short by close() is not committed, so
    the next member of the group gets it again."""
    topic = backend.topic()
    g = group()
    with backend.producer() as producer:
        producer.send_sync(mq.Message(topic, value=b"m0"), timeout=30)
    policy = mq.RetryPolicy(max_attempts=2, backoff=30.0, dead_letter=False)

    def handler(msg: mq.Message) -> None:
        raise RuntimeError("fails first")

    first = Running(backend.consumer(g, retry=policy), [topic], handler)
    wait_for(lambda: len(first.messages()) == 1, what="first attempt")
    first.stop()  # during the 30 s back-off: the message is not committed
    second = Running(backend.consumer(g), [topic])
    wait_for(lambda: len(second.messages()) == 1, what="redelivery")
    second.stop()
    assert second.messages()[0].value == b"m0"
    assert second.messages()[0].offset == first.messages()[0].offset


def test_bad_messages_are_typed_errors(backend: Backend) -> None:
    topic = backend.topic()
    with backend.producer() as producer:
        with pytest.raises(mq.InvalidArgumentError, match="value"):
            producer.send(mq.Message(topic, value=42))  # type: ignore[arg-type]
        with pytest.raises(mq.InvalidArgumentError, match="header"):
            producer.send(mq.Message(topic, value=b"v", headers={"h": 1}))  # type: ignore[dict-item]
        with pytest.raises(mq.InvalidArgumentError, match="topic"):
            producer.send(mq.Message(7, value=b"v"))  # type: ignore[arg-type]
        with pytest.raises(mq.DeliveryError) as failed:  # an empty name: refused by the broker
            producer.send_sync(mq.Message("", value=b"v"), timeout=30)
        assert failed.value.code == "TOPIC_EXCEPTION"


def test_subscribe_argument_errors(backend: Backend) -> None:
    consumer = backend.consumer(group())
    with pytest.raises(mq.ConsumerError):
        consumer.subscribe([], lambda m: None)
    with pytest.raises(mq.InvalidArgumentError, match=r"topics\[0\]"):
        consumer.subscribe([""], lambda m: None)
    consumer.close()
    with pytest.raises(mq.ConsumerError):
        consumer.subscribe([backend.topic()], lambda m: None)


# ------------------------------------------------------------------ asyncio
def test_asyncio_send_and_subscribe_carry_trace_ids(backend: Backend) -> None:
    topic = backend.topic(partitions=2)

    async def main() -> tuple[list[tuple[bytes | str | None, str | None]], list[str | None]]:
        reports: list[str | None] = []
        producer = backend.async_producer()
        with clog.trace_context("t-async"):
            await producer.send(
                mq.Message(topic, key="a", value=b"1"), lambda err: reports.append(clog.trace_id())
            )
            await producer.send_sync(mq.Message(topic, key="b", value=b"2"), timeout=30)
        await producer.send(mq.Message(topic, key="c", value=b"3"))
        assert await producer.flush(30) == 0
        await producer.close()
        with pytest.raises(mq.ProducerClosedError):
            await producer.send(mq.Message(topic, value=b"late"))
        consumer = backend.async_consumer(group())
        seen: list[tuple[bytes | str | None, str | None]] = []

        async def handle(msg: mq.Message) -> None:
            seen.append((msg.value, clog.trace_id()))
            if len(seen) == 3:
                await consumer.close()

        await asyncio.wait_for(consumer.subscribe([topic], handle), 60)
        return seen, reports

    seen, reports = asyncio.run(main())
    assert sorted(seen, key=lambda s: str(s[0])) == [
        (b"1", "t-async"),
        (b"2", "t-async"),
        (b"3", None),
    ]
    assert reports == ["t-async"]


def test_asyncio_iterator_commits_what_the_loop_finished(backend: Backend) -> None:
    topic = backend.topic()
    g = group()

    async def main() -> tuple[list[bytes | str | None], list[bytes | str | None]]:
        producer = backend.async_producer()
        for v in (b"a", b"b", b"c"):
            await producer.send(mq.Message(topic, value=v))
        assert await producer.flush(30) == 0
        await producer.close()
        first: list[bytes | str | None] = []
        consumer = backend.async_consumer(g)
        async for msg in consumer.messages([topic]):
            first.append(msg.value)
            if msg.value == b"b":
                break  # "b" was not finished: not committed
        await consumer.close()
        again: list[bytes | str | None] = []
        consumer = backend.async_consumer(g)
        async for msg in consumer.messages([topic]):
            again.append(msg.value)
            if msg.value == b"c":
                break
        await consumer.close()
        return first, again

    first, again = asyncio.run(asyncio.wait_for(main(), 90))
    assert first == [b"a", b"b"]
    assert again == [b"b", b"c"]


# ------------------------------------------------------------------ non-blocking retries
def _retry_topics(*delays_ms: int) -> mq.RetryTopicsConfig:
    return mq.RetryTopicsConfig(delaysMs=delays_ms)


def _attempts(run: Timed, value: bytes) -> list[tuple[str, float]]:
    """(topic, wall time) of each handling of ``value``, in order."""
    with run.lock:
        return [
            (m.topic, t) for (m, _), t in zip(run.seen, run.times, strict=True) if m.value == value
        ]


class Timed(Running):
    """:class:`Running` that also records the wall time of each handling."""

    def __init__(
        self,
        consumer: mq.Consumer,
        topics: list[str],
        handler: Callable[[mq.Message], object] | None = None,
    ) -> None:
        self.times: list[float] = []

        def timed(msg: mq.Message) -> object:
            with self.lock:
                self.times.append(time.time())
            return None if handler is None else handler(msg)

        super().__init__(consumer, topics, timed)


def _read_all(backend: Backend, topic: str, count: int) -> list[mq.Message]:
    """The first ``count`` messages of ``topic`` (and, after a short wait, any extra)."""
    reader = Running(backend.consumer(group()), [topic])
    wait_for(lambda: len(reader.messages()) >= count, what=f"{count} messages in {topic}")
    time.sleep(0.5)  # a message too many would come now
    reader.stop()
    return reader.messages()


def test_retry_topics_deliver_after_their_delays_and_dead_letter_exactly_the_failures(
    backend: Backend,
) -> None:
    topic = backend.topic(partitions=2)
    values = [b"ok-0", b"bad-1", b"ok-2", b"flaky-3", b"bad-4", b"ok-5"]
    with backend.producer() as producer, clog.trace_context("t-retry"):
        for i, value in enumerate(values):
            producer.send(mq.Message(topic, key=f"k{i}", value=value))
        assert producer.flush(30) == 0
    flaky_failed = threading.Event()

    def handler(msg: mq.Message) -> None:
        if msg.value in (b"bad-1", b"bad-4"):
            raise RuntimeError("always")
        if msg.value == b"flaky-3" and not flaky_failed.is_set():
            flaky_failed.set()
            raise RuntimeError("once")

    run = Timed(backend.consumer(group(), retry_topics=_retry_topics(200, 500)), [topic], handler)
    wait_for(
        lambda: all(len(_attempts(run, v)) >= 3 for v in (b"bad-1", b"bad-4")),
        what="three attempts of each failing message",
    )
    time.sleep(0.3)  # a fourth attempt would come now
    run.stop()
    retry_200, retry_500 = mq.retry_topic(topic, 200), mq.retry_topic(topic, 500)
    main_offsets = {}
    for msg, tid in run.seen:
        assert tid == "t-retry"  # bound on every topic
        if msg.topic == topic:
            main_offsets[msg.value] = (msg.partition, msg.offset)
    for value in (b"bad-1", b"bad-4"):
        attempts = _attempts(run, value)
        assert [t for t, _ in attempts] == [topic, retry_200, retry_500]
        assert attempts[1][1] - attempts[0][1] >= 0.2 - 0.005
        assert attempts[2][1] - attempts[1][1] >= 0.5 - 0.005
    assert [t for t, _ in _attempts(run, b"flaky-3")] == [topic, retry_200]
    for value in (b"ok-0", b"ok-2", b"ok-5"):
        assert [t for t, _ in _attempts(run, value)] == [topic]
    dead = _read_all(backend, topic + mq.DLQ_SUFFIX, 2)
    assert sorted(m.value for m in dead) == [b"bad-1", b"bad-4"]  # type: ignore[type-var]
    for letter in dead:
        info = mq.read_dead_letter(letter)
        assert info.original_topic == topic
        assert (info.original_partition, info.original_offset) == main_offsets[letter.value]
        assert info.attempts == 3 and info.error == "RuntimeError: always"
        assert letter.trace_id == "t-retry"
        assert letter.key is not None


def test_retry_topics_do_not_hold_up_the_partition(backend: Backend) -> None:
    topic = backend.topic()

    def handler(msg: mq.Message) -> None:
        if isinstance(msg.value, bytes) and msg.value.startswith(b"bad"):
            raise ValueError("no")

    run = Timed(backend.consumer(group(), retry_topics=_retry_topics(500)), [topic], handler)
    with backend.producer() as producer:
        # a first failure warms the consumer's retry producer up (its start takes ~0.5 s on
        # the local broker), so that what follows measures the steady state
        producer.send_sync(mq.Message(topic, key=b"k", value=b"bad-warm-up"), timeout=30)
        wait_for(lambda: len(_attempts(run, b"bad-warm-up")) >= 1, what="the warm-up failure")
        time.sleep(0.2)
        producer.send(mq.Message(topic, key=b"k", value=b"bad"))
        for i in range(20):
            producer.send(mq.Message(topic, key=b"k", value=f"ok-{i}"))
        assert producer.flush(30) == 0
    wait_for(lambda: len(_attempts(run, b"bad")) >= 2, what="the retry")
    run.stop()
    order = [m.value for m in run.messages() if m.value != b"bad-warm-up"]
    assert order[0] == b"bad" and order[-1] == b"bad"  # every ok-i came before the retry
    assert order[1:-1] == [f"ok-{i}".encode() for i in range(20)]
    (_, failed_at), (_, retried_at) = _attempts(run, b"bad")
    assert retried_at - failed_at >= 0.5 - 0.005
    last_ok = max(_attempts(run, b"ok-19"))[1]
    assert last_ok < failed_at + 0.5  # the same key's next messages did not wait for it


def test_a_change_of_the_retry_delays_applies_to_later_failures(backend: Backend) -> None:
    topic = backend.topic()
    consumer = backend.consumer(group(), retry_topics=_retry_topics(200))

    def handler(msg: mq.Message) -> None:
        if isinstance(msg.value, bytes) and msg.value.startswith(b"bad"):
            raise ValueError("no")

    run = Timed(consumer, [topic], handler)
    with backend.producer() as producer:
        producer.send_sync(mq.Message(topic, value=b"bad-1"), timeout=30)
        wait_for(lambda: len(_attempts(run, b"bad-1")) >= 2, what="bad-1's retry")
        # bad-1's last attempt has failed; let it reach the DLQ before the change, or where it
        # goes next is decided under whichever delays are in force by then (a race)
        _read_all(backend, topic + mq.DLQ_SUFFIX, 1)
        changed = _retry_topics(400, 300)
        consumer.set_retry_topics(changed)  # type: ignore[attr-defined]
        assert consumer.retry_topics == changed  # type: ignore[attr-defined]
        producer.send_sync(mq.Message(topic, value=b"bad-2"), timeout=30)
        wait_for(lambda: len(_attempts(run, b"bad-2")) >= 3, what="bad-2's retries")
    run.stop()
    first: dict[str, float] = {}  # at-least-once: a rebalance may deliver one again
    for t, when in _attempts(run, b"bad-2"):
        first.setdefault(t, when)
    r400, r300 = mq.retry_topic(topic, 400), mq.retry_topic(topic, 300)
    assert list(first) == [topic, r400, r300]
    assert first[r400] - first[topic] >= 0.4 - 0.005
    assert first[r300] - first[r400] >= 0.3 - 0.005
    # bad-1 failed under the old delays: topic, then retry.200. The change subscribes new retry
    # topics (a rebalance on noida-db), so bad-1's retry may be delivered again (at least once)
    # and that copy goes on under the delays in force then.
    first_1: dict[str, float] = {}
    for t, when in _attempts(run, b"bad-1"):
        first_1.setdefault(t, when)
    assert list(first_1)[:2] == [topic, mq.retry_topic(topic, 200)]
    dead = _read_all(backend, topic + mq.DLQ_SUFFIX, 2)
    assert {m.value for m in dead} == {b"bad-1", b"bad-2"}
    attempts: dict[bytes | str | None, set[int]] = {}
    for m in dead:
        attempts.setdefault(m.value, set()).add(mq.read_dead_letter(m).attempts or 0)
    assert min(attempts[b"bad-1"]) == 2 and min(attempts[b"bad-2"]) == 3


def test_asyncio_retry_topics(backend: Backend) -> None:
    topic = backend.topic(partitions=2)
    with backend.producer() as producer, clog.trace_context("t-aretry"):
        for i, value in enumerate([b"bad", b"ok-1", b"ok-2"]):
            producer.send(mq.Message(topic, key=f"k{i}", value=value))
        assert producer.flush(30) == 0

    async def main() -> list[tuple[str, bytes | str | None, str | None, float]]:
        # longer than a fetch's wait on the broker (fetch.wait.max.ms, 500 ms), so that only
        # holding the message back can explain the gap
        consumer = backend.async_consumer(group(), retry_topics=_retry_topics(700))
        seen: list[tuple[str, bytes | str | None, str | None, float]] = []
        closing: list[asyncio.Task[None]] = []

        def close() -> None:
            closing.append(asyncio.ensure_future(consumer.close()))

        async def handle(msg: mq.Message) -> None:
            seen.append((msg.topic, msg.value, clog.trace_id(), time.time()))
            if msg.value == b"bad":
                if sum(1 for s in seen if s[1] == b"bad") == 2:
                    asyncio.get_running_loop().call_later(0.3, close)
                raise RuntimeError("async no")

        await asyncio.wait_for(consumer.subscribe([topic], handle), 60)
        return seen

    seen = asyncio.run(main())
    bad = [s for s in seen if s[1] == b"bad"]
    assert [s[0] for s in bad] == [topic, mq.retry_topic(topic, 700)]
    assert bad[1][3] - bad[0][3] >= 0.7 - 0.005
    assert all(s[2] == "t-aretry" for s in seen)
    assert sorted(s[1] for s in seen if s[1] != b"bad") == [b"ok-1", b"ok-2"]  # type: ignore[type-var]
    (letter,) = _read_all(backend, topic + mq.DLQ_SUFFIX, 1)
    info = mq.read_dead_letter(letter)
    assert (info.original_topic, info.attempts, info.error) == (topic, 2, "RuntimeError: async no")


def test_groups_sharing_a_topic_each_retry_only_their_own_failures(backend: Backend) -> None:
    """Retry topics are per source topic, shared by every group consuming it: a group skips
    the messages another group moved there."""
    topic = backend.topic()
    with backend.producer() as producer:
        producer.send_sync(mq.Message(topic, key=b"k", value=b"m"), timeout=30)

    def fails(msg: mq.Message) -> None:
        raise ValueError("only here")

    topics = _retry_topics(200)
    failing = Timed(backend.consumer(group(), retry_topics=topics), [topic], fails)
    fine = Timed(backend.consumer(group(), retry_topics=topics), [topic])
    wait_for(lambda: len(_attempts(failing, b"m")) >= 2, what="the failing group's retry")
    time.sleep(0.6)  # the other group would handle the retry now
    failing.stop()
    fine.stop()
    assert [t for t, _ in _attempts(failing, b"m")] == [topic, mq.retry_topic(topic, 200)]
    assert [t for t, _ in _attempts(fine, b"m")] == [topic]


# ------------------------------------------------------------------ batch handlers
class RunningLists:
    """A consumer's blocking ``subscribe_batch`` on a thread, recording each list it got."""

    def __init__(
        self,
        consumer: mq.Consumer,
        topics: list[str],
        handler: Callable[[list[mq.Message]], object] | None = None,
        max_messages: int = 25,
        max_wait: float = 0.2,
    ) -> None:
        self.consumer = consumer
        self.lock = threading.Lock()
        self.lists: list[list[mq.Message]] = []
        self.errors: list[BaseException] = []

        def callback(msgs: list[mq.Message]) -> object:
            with self.lock:
                self.lists.append(list(msgs))
            return None if handler is None else handler(msgs)

        def run() -> None:
            try:
                consumer.subscribe_batch(
                    topics, callback, max_messages=max_messages, max_wait=max_wait
                )
            except BaseException as exc:
                self.errors.append(exc)

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def values(self) -> list[bytes | str | None]:
        with self.lock:
            return [m.value for batch in self.lists for m in batch]

    def stop(self) -> None:
        self.consumer.close()
        self.thread.join(30)
        assert not self.thread.is_alive(), "subscribe_batch did not return after close()"
        if self.errors:
            raise self.errors[0]


def _traced_values(backend: Backend, topic: str, count: int) -> list[bytes]:
    values = [f"v{i:03d}".encode() for i in range(count)]
    with backend.producer() as producer:
        for i, value in enumerate(values):
            with clog.trace_context(f"t-{i}"):
                producer.send(mq.Message(topic, key=f"k{i % 7}", value=value))
        assert producer.flush(30) == 0
    return values


def test_batch_handler_gets_bounded_lists_and_offsets_after_it_returned(
    backend: Backend,
) -> None:
    topic = backend.topic(partitions=3)
    values = _traced_values(backend, topic, 120)
    traces: list[tuple[str | None, str | None, str | None]] = []

    def handler(msgs: list[mq.Message]) -> None:
        outside = clog.trace_id()  # a list has no single trace id: none is bound
        for msg in msgs:
            with mq.message_trace(msg):
                traces.append((outside, clog.trace_id(), msg.trace_id))

    g = group()
    run = RunningLists(backend.consumer(g), [topic], handler, max_messages=25)
    wait_for(lambda: len(run.values()) >= 120, what="120 messages")
    run.stop()
    assert sorted(run.values()) == values  # type: ignore[type-var]
    assert all(1 <= len(batch) <= 25 for batch in run.lists)
    for batch in run.lists:  # per partition, offsets rise within a list
        for p in {m.partition for m in batch}:
            offsets = [m.offset for m in batch if m.partition == p]
            assert offsets == sorted(offsets)  # type: ignore[type-var]
    assert len(traces) == 120
    assert all(outside is None and bound == tid for outside, bound, tid in traces)
    assert {tid for _, _, tid in traces} == {f"t-{i}" for i in range(120)}
    # every offset was stored once its list returned: the group resumes after them
    with backend.producer() as producer:
        producer.send_sync(mq.Message(topic, key="k0", value=b"after"), timeout=30)
    again = RunningLists(backend.consumer(g), [topic])
    wait_for(lambda: len(again.values()) >= 1, what="the new message")
    time.sleep(1.0)  # anything not committed would come now
    again.stop()
    assert again.values() == [b"after"]


def test_batch_failure_retries_the_failed_part_then_forwards_each(backend: Backend) -> None:
    topic = backend.topic()
    with backend.producer() as producer:
        for value in (b"ok-0", b"bad-1", b"ok-2", b"bad-3"):
            producer.send(mq.Message(topic, key=b"k", value=value))
        assert producer.flush(30) == 0

    def handler(msgs: list[mq.Message]) -> None:
        failed = {
            i: ValueError(f"cannot {m.value!r}")
            for i, m in enumerate(msgs)
            if isinstance(m.value, bytes) and m.value.startswith(b"bad")
        }
        if failed:
            raise mq.BatchFailure(failed)

    policy = mq.RetryPolicy(max_attempts=2, backoff=0.01)
    consumer = backend.consumer(group(), retry=policy, retry_topics=_retry_topics(200))
    run = RunningLists(consumer, [topic], handler)
    wait_for(lambda: run.values().count(b"bad-3") >= 4, what="every attempt of bad-3")
    time.sleep(0.3)
    run.stop()
    counts = {v: run.values().count(v) for v in (b"ok-0", b"bad-1", b"ok-2", b"bad-3")}
    # bad: 2 attempts on the topic, 2 on its retry topic; ok: once
    assert counts == {b"ok-0": 1, b"bad-1": 4, b"ok-2": 1, b"bad-3": 4}
    retried = [b for b in run.lists if all(m.value in (b"bad-1", b"bad-3") for m in b)]
    assert len(retried) >= 3  # in place on the topic, then twice from the retry topic
    retry_topic = mq.retry_topic(topic, 200)
    assert any(m.topic == retry_topic for b in run.lists for m in b)
    dead = _read_all(backend, topic + mq.DLQ_SUFFIX, 2)
    assert sorted(m.value for m in dead) == [b"bad-1", b"bad-3"]  # type: ignore[type-var]
    for letter in dead:
        info = mq.read_dead_letter(letter)
        assert (info.original_topic, info.attempts) == (topic, 4)
        assert info.error == f"ValueError: cannot {letter.value!r}"


def test_a_raising_batch_handler_fails_the_whole_list(backend: Backend) -> None:
    topic = backend.topic()
    with backend.producer() as producer:
        for i in range(5):
            producer.send(mq.Message(topic, value=f"m{i}"))
        assert producer.flush(30) == 0

    def handler(msgs: list[mq.Message]) -> None:
        raise RuntimeError("database down")

    policy = mq.RetryPolicy(max_attempts=1)  # no retry; dead-letter every message
    with capture_logs() as logs:
        run = RunningLists(backend.consumer(group(), retry=policy), [topic], handler)
        wait_for(lambda: len(run.values()) >= 5, what="the 5 messages")
        time.sleep(0.3)
        run.stop()
    dead = _read_all(backend, topic + mq.DLQ_SUFFIX, 5)
    assert sorted(m.value for m in dead) == [f"m{i}".encode() for i in range(5)]  # type: ignore[type-var]
    assert all(mq.read_dead_letter(m).error == "RuntimeError: database down" for m in dead)
    failed = [r for r in logs if r["msg"] == "batch callback failed"]
    assert failed and sum(r["fields"]["failed"] for r in failed) == 5
    assert failed[0]["error"]["type"] == "RuntimeError"


def test_bad_batch_limits_are_config_errors(backend: Backend) -> None:
    consumer = backend.consumer(group())
    with pytest.raises(mq.ConfigError, match="max_messages"):
        consumer.subscribe_batch(["t"], lambda msgs: None, max_messages=0)
    with pytest.raises(mq.ConfigError, match="max_wait"):
        consumer.subscribe_batch(["t"], lambda msgs: None, max_wait=-1)
    consumer.close()


def test_asyncio_batch_handler(backend: Backend) -> None:
    topic = backend.topic(partitions=2)
    values = _traced_values(backend, topic, 60)
    with backend.producer() as producer:
        producer.send_sync(mq.Message(topic, key="k0", value=b"bad"), timeout=30)

    async def main() -> tuple[list[list[mq.Message]], list[bool]]:
        consumer = backend.async_consumer(group(), retry_topics=_retry_topics(200))
        lists: list[list[mq.Message]] = []
        traced: list[bool] = []
        closing: list[asyncio.Task[None]] = []

        async def handle(msgs: list[mq.Message]) -> None:
            lists.append(msgs)
            for msg in msgs:
                with mq.message_trace(msg):
                    traced.append(clog.trace_id() == msg.trace_id)
            bad = {i: ValueError("bad") for i, m in enumerate(msgs) if m.value == b"bad"}
            seen = sum(1 for batch in lists for m in batch if m.value == b"bad")
            if seen == 2 and not closing:
                closing.append(asyncio.ensure_future(consumer.close()))
            if bad:
                raise mq.BatchFailure(bad)

        await asyncio.wait_for(
            consumer.subscribe_batch([topic], handle, max_messages=16, max_wait=0.1), 60
        )
        return lists, traced

    lists, traced = asyncio.run(main())
    got = [m.value for batch in lists for m in batch]
    assert sorted(v for v in got if v != b"bad") == values  # type: ignore[type-var]
    assert all(1 <= len(batch) <= 16 for batch in lists)
    assert all(traced)
    bad_topics = [m.topic for batch in lists for m in batch if m.value == b"bad"]
    assert bad_topics == [topic, mq.retry_topic(topic, 200)]
    (letter,) = _read_all(backend, topic + mq.DLQ_SUFFIX, 1)
    assert mq.read_dead_letter(letter).attempts == 2
