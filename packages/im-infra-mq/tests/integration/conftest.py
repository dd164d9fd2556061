"""Helpers for the mq integration tests (stack broker + per-test brokers)."""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from im_infra import clog, mq

#: Group timings from the test guidance (docs/mq.md): fast rebalances on the local broker.
GROUP_TIMINGS = {"sessionTimeoutMs": 6000, "heartbeatIntervalMs": 1500}


def overrides(brokers: str, **consumer: Any) -> dict[str, Any]:
    """kafka.yaml overrides for a test: its broker, fast group timings, earliest reset."""
    return {
        "common": {"brokers": [brokers]},
        "consumer": {**GROUP_TIMINGS, "autoOffsetReset": "earliest", **consumer},
    }


def unique(prefix: str) -> str:
    return f"mqit-{prefix}-{uuid.uuid4().hex[:10]}"


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class LogCapture:
    """A clog sink keeping every JSON line (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buf: list[str] = []

    def write(self, text: str) -> int:
        with self._lock:
            self._buf.append(text)
        return len(text)

    def flush(self) -> None:
        pass

    def records(self) -> list[dict[str, Any]]:
        with self._lock:
            text = "".join(self._buf)
        out = []
        for line in text.splitlines():
            line = line.strip()
            if line.startswith("{"):
                out.append(json.loads(line))
        return out


@pytest.fixture
def logs() -> Iterator[LogCapture]:
    capture = LogCapture()
    clog.init(service="mq-it", level="INFO", format="json", sink=capture)
    yield capture
    clog.init(service="mq-it", level="INFO", format="json")


@pytest.fixture
def admin(kafka_brokers: str) -> Iterator[mq.KafkaAdminClient]:
    client = mq.new_admin_client("mq-it", common={"brokers": [kafka_brokers]})
    yield client
    client.close()


@pytest.fixture
def make_topic(admin: mq.KafkaAdminClient) -> Iterator[Callable[..., str]]:
    made: list[str] = []

    def make(prefix: str, partitions: int = 1) -> str:
        name = unique(prefix)
        admin.create_topic(name, partitions, 1)
        made.append(name)
        return name

    yield make
    existing = admin.list_topics()
    for name in made:
        # the topic, its dead-letter topic and the retry topics consumers created
        for topic in (t for t in existing if t == name or t.startswith(name + ".")):
            with contextlib.suppress(mq.TopicNotFoundError):
                admin.delete_topic(topic)


class Collector:
    """A consume callback recording messages; optionally stops the consumer at ``stop_at``."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.messages: list[mq.Message] = []
        self.trace_ids: list[str | None] = []

    def __call__(self, msg: mq.Message) -> None:
        with self.lock:
            self.messages.append(msg)
            self.trace_ids.append(clog.trace_id())

    def values(self) -> list[bytes]:
        with self.lock:
            return [m.value for m in self.messages if isinstance(m.value, bytes)]

    def count(self) -> int:
        with self.lock:
            return len(self.messages)


def run_in_thread(consumer: mq.KafkaConsumer, topics: list[str], callback: Any) -> threading.Thread:
    """Run the blocking ``subscribe`` on a thread; errors are re-raised by ``join_or_raise``."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            consumer.subscribe(topics, callback)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.errors = errors  # type: ignore[attr-defined]
    thread.start()
    return thread


def join_or_raise(thread: threading.Thread, timeout: float = 30.0) -> None:
    thread.join(timeout)
    assert not thread.is_alive(), "consumer loop did not stop after close()"
    errors = thread.errors  # type: ignore[attr-defined]
    if errors:
        raise errors[0]


def produce(brokers: str, topic: str, values: list[bytes], *, keyed: bool = True) -> None:
    with mq.new_producer("mq-it", common={"brokers": [brokers]}) as producer:
        for i, value in enumerate(values):
            key = f"k{i}".encode() if keyed else None
            producer.send(mq.Message(topic, key=key, value=value))
        assert producer.flush(30) == 0


class Helpers:
    """The helpers above, handed to tests as the ``h`` fixture (tests cannot import conftest)."""

    overrides = staticmethod(overrides)
    unique = staticmethod(unique)
    wait_for = staticmethod(wait_for)
    run_in_thread = staticmethod(run_in_thread)
    join_or_raise = staticmethod(join_or_raise)
    produce = staticmethod(produce)
    Collector = Collector


@pytest.fixture
def h() -> type[Helpers]:
    return Helpers
