"""Issue #15 item 3: after a fatal librdkafka error the producer replaces its librdkafka producer
itself, reports every message queued or in flight in the old one to its callback with the fatal
cause, and keeps accepting sends. On a broker the test owns: SIGKILLed mid-stream and restarted
on the same port and data, after which noida-db has lost the last acknowledged messages and the
idempotent producer fails with OUT_OF_ORDER_SEQUENCE_NUMBER (see services.md).

noida-db only: Apache Kafka keeps acknowledged messages. Tansu (memory storage) comes back
empty; its fatal error is UNKNOWN_PRODUCER_ID, whose refused messages showed an im-infra bug
(they were not reported with the fatal cause; fixed, unit-tested in test_producer_offline.py),
but then the replacement producer's send either waits for the vanished topic until
message.timeout.ms or is refused with UNKNOWN_PRODUCER_ID again (epoch bumped thousands of
times): 1 pass in 3 runs there."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from im_infra import mq

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TOPIC = "fatal-replace"


class Results:
    """Every delivery report, by message number."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_id: dict[int, mq.MQError | None] = {}

    def callback(self, i: int) -> Any:
        def record(err: mq.MQError | None) -> None:
            with self.lock:
                assert i not in self.by_id, f"message {i} reported twice"
                self.by_id[i] = err

        return record

    def failed(self) -> list[mq.MQError]:
        with self.lock:
            return [e for e in self.by_id.values() if e is not None]


@pytest.mark.broker_deviation("acked-messages-lost-on-restart", needs=True)
def test_fatal_error_replaces_the_producer_and_reports_in_flight_messages(
    kafka_server_factory: Any, logs: Any, metrics_probe: Any
) -> None:
    replaced_before = metrics_probe.value("im_infra.mq.producer.replaced")
    server = kafka_server_factory()
    admin = mq.new_admin_client("mq-it", common={"brokers": [server.brokers]})
    admin.create_topic(TOPIC, 1, 1)
    admin.close()
    producer = mq.new_producer(
        "mq-it",
        common={"brokers": [server.brokers]},
        rdkafka_config={"message.timeout.ms": 60_000, "linger.ms": 5},
    )
    results = Results()
    sent = 0
    fatal_seen = False
    try:
        for _cycle in range(4):  # the broker loses acked messages on most restarts, not all
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline:
                producer.send(mq.Message(TOPIC, value=b"%d" % sent), results.callback(sent))
                sent += 1
                if sent % 200 == 0:
                    time.sleep(0.01)
            server.kill()
            server.start()
            # Keep sending across the fatal error: sends never fail, the producer replaces itself.
            until = time.monotonic() + 20.0
            while time.monotonic() < until and not results.failed():
                producer.send(mq.Message(TOPIC, value=b"%d" % sent), results.callback(sent))
                sent += 1
                time.sleep(0.005)
            if results.failed():
                fatal_seen = True
                break
        assert fatal_seen, "the broker restarts did not provoke a fatal producer error"
        # Still accepting sends, delivered by the replacement.
        producer.send_sync(mq.Message(TOPIC, value=b"after"), timeout=60)
        assert producer.flush(60) == 0
        deadline = time.monotonic() + 30
        while len(results.by_id) < sent and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        producer.close(timeout=10)
    assert len(results.by_id) == sent  # every message reported exactly once
    failed = results.failed()
    # Each failure is the fatal error (never "producer closed (_PURGE_QUEUE)"): the messages the
    # broker refused carry it directly, those still queued in the replaced producer carry it too.
    assert all(isinstance(e, mq.DeliveryError) and e.retriable for e in failed), {
        (type(e).__name__, str(e)[:300]) for e in failed
    }
    assert all("fatal error" in str(e) and "was replaced" in str(e) for e in failed), failed[:3]
    codes = {e.code for e in failed if isinstance(e, mq.DeliveryError)}
    assert "OUT_OF_ORDER_SEQUENCE_NUMBER" in codes, codes
    assert not codes & {"_PURGE_QUEUE", "_PURGE_INFLIGHT", "_FATAL"}, codes
    replaced = [r for r in logs.records() if "replaced the librdkafka producer" in r["msg"]]
    assert replaced
    # Counted by the fatal cause's name.
    assert metrics_probe.value("im_infra.mq.producer.replaced") == replaced_before + len(replaced)
    assert metrics_probe.value(
        "im_infra.mq.producer.replaced", **{"error.type": replaced[0]["code"]}
    )
    print(f"{sent} sent, {len(failed)} reported with the fatal cause {codes}")
