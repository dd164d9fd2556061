"""A consumer process for the SIGKILL test: one line per handled message, flushed before the
callback returns (so a line exists for every message whose offset may have been stored).

Usage: python consumer_worker.py BROKERS TOPIC GROUP OUTFILE DELAY_S MAX_POLL_INTERVAL_MS
(MAX_POLL_INTERVAL_MS 0: no librdkafka option at all, the seed's flow as a service writes it.)
Static membership comes from the factory (coord, ``IM_INFRA_ETCD_ENDPOINTS``), unless
``MQ_IT_GROUP_INSTANCE_ID`` sets an explicit ``consumer.groupInstanceId``. ``MQ_IT_BATCH=N``
consumes with a batch handler (lists of up to N, lines written one message at a time, DELAY_S
after each), ``MQ_IT_ASYNC=1`` with the asyncio consumer.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from typing import Any

from im_infra import clog, mq


def main() -> None:
    brokers, topic, group, outfile, delay, max_poll_ms = sys.argv[1:7]
    instance = os.environ.get("MQ_IT_GROUP_INSTANCE_ID")
    static: dict[str, object] = {"groupInstanceId": instance} if instance else {}
    concurrency = int(os.environ.get("MQ_IT_CONCURRENCY", "1"))
    max_poll = int(max_poll_ms)
    clog.init(service="mq-it-worker", level=(os.environ.get("DBG") and "INFO") or "WARNING")
    batch = int(os.environ.get("MQ_IT_BATCH", "0"))
    if batch:
        consume_lists(brokers, topic, group, outfile, float(delay), batch)
        return
    consumer = mq.new_consumer(
        "mq-it-worker",
        group,
        common={"brokers": [brokers]},
        consumer={
            "sessionTimeoutMs": 6000,
            "heartbeatIntervalMs": 1500,
            "autoOffsetReset": "earliest",
            "autoCommitIntervalMs": 200,
            "concurrency": concurrency,
            **static,
        },
        # The rebalance timeout: how long a join waits for a member that vanished (see the test).
        rdkafka_config={"max.poll.interval.ms": max_poll} if max_poll else None,
    )
    signal.signal(signal.SIGTERM, lambda *_: consumer.close())
    fd = os.open(outfile, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    pause = float(delay)

    def handle(msg: mq.Message) -> None:
        assert isinstance(msg.value, bytes)
        os.write(fd, msg.value + b"\n")  # unbuffered: survives SIGKILL
        if pause:
            time.sleep(pause)

    consumer.subscribe([topic], handle)


def consume_lists(brokers: str, topic: str, group: str, outfile: str, pause: float, n: int) -> None:
    """The batch-handler form: a line per message as the handler gets to it, so a SIGKILL
    lands in the middle of a list with part of it written and part not."""
    settings: dict[str, Any] = {
        "common": {"brokers": [brokers]},
        "consumer": {
            "sessionTimeoutMs": 6000,
            "heartbeatIntervalMs": 1500,
            "autoOffsetReset": "earliest",
            "autoCommitIntervalMs": 200,
        },
    }
    fd = os.open(outfile, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    if os.environ.get("MQ_IT_ASYNC"):

        async def run() -> None:
            consumer = mq.new_async_consumer("mq-it-worker", group, **settings)
            asyncio.get_running_loop().add_signal_handler(
                signal.SIGTERM, lambda: asyncio.ensure_future(consumer.close())
            )

            async def handle(msgs: list[mq.Message]) -> None:
                for msg in msgs:
                    assert isinstance(msg.value, bytes)
                    os.write(fd, msg.value + b"\n")
                    await asyncio.sleep(pause)

            await consumer.subscribe_batch([topic], handle, max_messages=n, max_wait=0.1)

        asyncio.run(run())
        return
    consumer = mq.new_consumer("mq-it-worker", group, **settings)
    signal.signal(signal.SIGTERM, lambda *_: consumer.close())

    def handle(msgs: list[mq.Message]) -> None:
        for msg in msgs:
            assert isinstance(msg.value, bytes)
            os.write(fd, msg.value + b"\n")
            time.sleep(pause)

    consumer.subscribe_batch([topic], handle, max_messages=n, max_wait=0.1)


if __name__ == "__main__":
    main()
