"""A consumer process for the SIGKILL test: one line per handled message, flushed before the
callback returns (so a line exists for every message whose offset may have been stored).

Usage: python consumer_worker.py BROKERS TOPIC GROUP OUTFILE DELAY_S MAX_POLL_INTERVAL_MS
(MAX_POLL_INTERVAL_MS 0: no librdkafka option at all, the seed's flow as a service writes it.)
Static membership comes from the factory (coord, ``IM_INFRA_ETCD_ENDPOINTS``), unless
``MQ_IT_GROUP_INSTANCE_ID`` sets an explicit ``consumer.groupInstanceId``.
"""

from __future__ import annotations

import os
import signal
import sys
import time

from im_infra import clog, mq


def main() -> None:
    brokers, topic, group, outfile, delay, max_poll_ms = sys.argv[1:7]
    instance = os.environ.get("MQ_IT_GROUP_INSTANCE_ID")
    static: dict[str, object] = {"groupInstanceId": instance} if instance else {}
    concurrency = int(os.environ.get("MQ_IT_CONCURRENCY", "1"))
    max_poll = int(max_poll_ms)
    clog.init(service="mq-it-worker", level=(os.environ.get("DBG") and "INFO") or "WARNING")
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


if __name__ == "__main__":
    main()
