"""How often an idle consumer's librdkafka fetches from the broker (a broker's behaviour, not mq's).

Apache Kafka holds a fetch that finds nothing new for the consumer's ``fetch.wait.max.ms``
(default 500 ms), so an idle consumer sends about 2 ``Fetch`` requests a second per broker. A
broker that answers at once makes librdkafka fetch back to back: the consumer and the broker
then burn CPU while nothing happens (noida-db, the development stack's broker: 27k-46k a second,
see docs/operations.md). This joins a fresh group on a new 3-partition topic holding one
message, reads it, then reports ``Fetch`` requests per second from librdkafka's statistics
(``brokers.*.req.Fetch``) and the process's CPU share while idle.

Usage: eval "$(scripts/devstack env)"
       uv run python benchmarks/broker_fetch_rate.py [--brokers HOST:PORT] [--seconds 15]
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
import uuid
from typing import Any

import confluent_kafka

from im_infra import mq


def _fetches(stats: dict[str, Any]) -> int:
    return sum(int(b.get("req", {}).get("Fetch", 0)) for b in stats["brokers"].values())


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--brokers", default=os.environ.get("IM_INFRA_KAFKA_BROKERS"))
    parser.add_argument("--seconds", type=float, default=15.0, help="idle seconds measured")
    args = parser.parse_args()
    if not args.brokers:
        parser.error("no brokers: --brokers or $IM_INFRA_KAFKA_BROKERS")
    topic = f"bench-idle-{uuid.uuid4().hex[:8]}"
    admin = mq.KafkaAdminClient({"bootstrap.servers": args.brokers})
    admin.create_topic(topic, 3, 1)
    producer = confluent_kafka.Producer({"bootstrap.servers": args.brokers})
    producer.produce(topic, b"x")
    producer.flush(10)
    stats: list[dict[str, Any]] = []
    consumer = confluent_kafka.Consumer(
        {
            "bootstrap.servers": args.brokers,
            "group.id": topic,
            "auto.offset.reset": "earliest",
            "statistics.interval.ms": 1000,
            "stats_cb": lambda s: stats.append(json.loads(s)),
        }
    )
    consumer.subscribe([topic])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # until the one message came: joined and fetching
        msg = consumer.poll(0.5)
        if msg is not None and msg.error() is None:
            break
    else:
        raise SystemExit("no message within 60 s: the group was not joined")
    first = len(stats)
    cpu0, t0 = _cpu(), time.monotonic()
    while time.monotonic() - t0 < args.seconds:
        consumer.poll(0.5)
    cpu = (_cpu() - cpu0) / (time.monotonic() - t0)
    consumer.close()
    admin.delete_topic(topic)
    admin.close()
    window = stats[first:]
    if len(window) < 2:
        raise SystemExit("too few statistics callbacks; raise --seconds")
    rate = (_fetches(window[-1]) - _fetches(window[0])) / (len(window) - 1)
    print(f"idle consumer: {rate:,.0f} Fetch requests/s, {100 * cpu:.0f} % of a core")
    out = {"bench": "broker_fetch_rate", "fetch_per_s": round(rate), "cpu_pct": round(100 * cpu)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
