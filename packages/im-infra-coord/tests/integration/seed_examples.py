"""The seeds' usage examples in Python form, given only service names (run as a subprocess).

Every component reads its document from etcd through the process's default provider
($IM_INFRA_ETCD_ENDPOINTS, $IM_INFRA_ENV): nothing here names a broker, a Redis or a database.
Prints one marker line per step on stdout; after "ready" it waits for changes made with etcdctl
(db.yaml slowThreshold, redis.yaml retry.maxRetries) and prints what it observed.

usage: seed_examples.py TOPIC GROUP
"""

from __future__ import annotations

import sys
import threading
import time

import redis.retry

from im_infra import cache, clog, db, mq, uid


def say(*parts: object) -> None:
    print(*parts, flush=True)


def main() -> int:
    topic, group = sys.argv[1], sys.argv[2]
    clog.init("seed-examples", sink=sys.stderr)
    logger = clog.get_logger("example")

    say("kafka clientIDPrefix", mq.load_config("im-gateway").common.client_id_prefix)
    # mq seed §5: topic management is an admin operation
    with mq.new_admin_client("im-gateway") as admin:
        admin.create_topic(topic, partitions=1)

    # mq seed §4 producer: mq.NewProducer(ctx, "im-gateway", mq.WithLogger(logger))
    with mq.new_producer("im-gateway", logger=logger) as producer:
        msg = mq.Message(topic=topic, key=b"user-1", value=b"hello", headers={"trace_id": b"t-1"})
        producer.send_sync(msg)
        say("sent")

    # mq seed §4 consumer: mq.NewConsumer(ctx, "im-logic", "im-logic-group", ...); it reads
    # from the beginning only because kafka.yaml in etcd says autoOffsetReset: earliest
    got = threading.Event()
    consumer = mq.new_consumer("im-logic", group, logger=logger)

    def handler(m: mq.Message) -> None:
        logger.info("message received", topic=m.topic, key=m.key)
        say("received", m.value.decode() if isinstance(m.value, bytes) else m.value)
        got.set()

    runner = threading.Thread(target=consumer.subscribe, args=([topic], handler), daemon=True)
    runner.start()
    if not got.wait(30):
        say("consume timed out")
        return 1
    consumer.close()

    # cache and db: cache.new("im-logic"), db.new("im-logic")
    c = cache.new("im-logic")
    c.set("k", "v")
    say("cache prefix", c.key_prefix, "value", c.get("k"))
    d = db.new("im-logic")
    d.ping()
    say("db", d.config.driver, d.config.database)

    # uid: a worker ID from coord, by service name only
    gen = uid.from_coord("im-logic")
    say("uid", gen.next_id() > 0)

    say("ready")
    retry = c.redis.get_retry()
    # the configured count: cache's gated Retry reports 0 outside a command safe to repeat
    configured_retries = redis.retry.Retry.get_retries
    deadline = time.monotonic() + 20
    seen_cache = seen_db = False
    while time.monotonic() < deadline and not (seen_cache and seen_db):
        if not seen_cache and configured_retries(retry) == 7:
            seen_cache = True
            say("cache retries", 7)
        if not seen_db and d.slow_threshold == 0.05:
            seen_db = True
            say("db slow threshold", 0.05)
        time.sleep(0.02)
    gen.close()
    c.close()
    d.close()
    return 0 if seen_cache and seen_db else 1


if __name__ == "__main__":
    sys.exit(main())
