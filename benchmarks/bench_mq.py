"""Benchmark: im_infra.mq against raw confluent-kafka on the same broker, in the same run.

Produce: 200-byte random (incompressible) values with keys, acks=all, idempotence on (the seed's
producer defaults, identical librdkafka properties for both sides), each message with a delivery
callback, through ``send`` per message and through ``send_batch`` (1000 ``Message`` objects
built by the loop per call); the clock starts after one warm-up message was delivered
(connection, metadata and the idempotent producer id take 0.5-1 s here) and stops when every
callback has fired.
Consume: a fresh group reads a topic of ``--consume-messages`` such messages with the same
at-least-once settings (``enable.auto.offset.store=false``); both sides call the same handler per
message, which reads the key and the value and counts (raw: on the confluent message, im-infra: on
its ``Message``). Raw is confluent-kafka's documented at-least-once loop: ``store_offsets`` after
each handler returned; im-infra stores a partition's finished offsets once per polled batch (and at
least every 100 ms), which is its implementation of the same guarantee. Both sides wait
``--prefetch-wait`` seconds after their first message so that librdkafka has fetched the topic
into its local queue, then the clock runs to the last message: the figure measures the client,
not how fast this machine's Python broker serves fetches (which varies by +-40 % between runs).
The group join is excluded.
Each side runs ``--rounds`` times, alternating who goes first; a rate is the side's best round
(as timeit keeps the best time). On this machine some rounds of either side run at a fraction of
their speed for reasons outside the client (produce: librdkafka's threads burning CPU for a whole
round; consume: a partition whose first fetch comes ~1 s late, ~215k/s instead of ~1.3M/s), seen
with raw confluent-kafka alone too; such stalls only ever slow a side down, and up to 3 of 7 rounds
of one side were hit, too many for a median. The medians are printed too. Each run also reports
the process CPU time per message (all threads, librdkafka's included; medians), the client's cost
independent of the broker's speed.
The asyncio consumer (``AsyncKafkaConsumer.subscribe`` with an ``async def`` handler doing the
same work) is measured in the same rounds; so is aiokafka's consumer (``getmany`` batches of up
to 500, the same ``async def`` handler per message, auto-commit), when aiokafka is importable. The
consume topic is written uncompressed so that aiokafka can read it without the optional lz4
package (every side reads the same topic).
aiokafka's producer is measured as a reference when it is importable.
faststream (issue #17), when importable, for each of its Kafka brokers (``faststream.kafka``,
aiokafka-based; ``faststream.confluent``, confluent-kafka-based): a ``KafkaBroker`` with
``acks="all"`` and ``enable_idempotence=True``, its per-message access log off (``logger=None``),
publishing the first ``--faststream-messages`` of the same keys and values in the same produce
rounds (alternating with the other sides, after the same warm-up message): ``await
broker.publish(value, topic, key=key)`` per message, which awaits that message's delivery (its
default; ``produce_ratio_vs_faststream`` is im-infra's ``send`` over it); the same with
``no_confirm=True``, the returned futures gathered at the end (``*_no_confirm``: what ``send``
with a delivery callback does); and ``await broker.publish_batch(*(KafkaPublishMessage(value,
key=key) ...), topic=topic)`` per 1000 messages (aiokafka's broker: one record batch, its
``max_batch_size`` raised to 1 MiB to hold them; confluent's: a task per message), compared with
``send_batch`` (``*_batch``). Its consumer: a subscriber
(fresh group, ``auto_offset_reset="earliest"``, auto-commit, its default) on the consume topic
whose ``async def`` handler takes the body and the ``KafkaMessage`` and reads the key from its
record, with the same prefetch wait, over the first ``--faststream-messages`` messages;
``consume_async_ratio_vs_faststream`` is the asyncio consumer over it. (Getting the key through
faststream's context makes fast-depends resolve it in anyio's thread pool per message: ~3x
slower than a handler taking only the body, ~5k/s here.)
I/O-bound handler (``--io-messages``): a 6-partition topic of messages with 1,000 keys spread over
it, each value the key's sequence number; the handler waits 1 ms (``time.sleep`` or
``asyncio.sleep``, standing for a database write) and counts per-key order violations (a
sequence number that is not the previous one + 1). Sequential (``concurrency=1``) against
``concurrency=16`` (ordered by key), for the blocking and the asyncio consumer, in the same run;
``io_handler_ratio_vs_sequential`` is the concurrent rate over the sequential one (best rounds;
medians printed too).

Usage: eval "$(scripts/devstack env)"
       uv run python benchmarks/bench_mq.py [--messages N] [--otel-sdk]
``--otel-sdk`` installs the OpenTelemetry SDK's MeterProvider (in-memory reader) first, so mq's
metrics are live; the default measures with the API's no-op. The reader is collected once at the
end, so the figures include the observable instruments' callbacks.
Brokers: --brokers, else $IM_INFRA_KAFKA_BROKERS. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import statistics
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from typing import Any, NamedTuple

import confluent_kafka

from im_infra import clog, mq
from im_infra.mq.config import KafkaConfig, consumer_properties, producer_properties

SERVICE = "bench-mq"
VALUE_SIZE = 200
BATCH = 1000  # messages per send_batch call


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def payloads(n: int) -> tuple[list[bytes], list[bytes]]:
    blob = os.urandom(VALUE_SIZE * n)
    values = [blob[i * VALUE_SIZE : (i + 1) * VALUE_SIZE] for i in range(n)]
    keys = [f"user-{i % 10_000}".encode() for i in range(n)]
    return keys, values


class Clock:
    """Wall time and this process's CPU time (every thread, librdkafka's included) of a run."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0

    def start(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def stop(self, n: int) -> Run:
        wall, cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu
        return Run(n / wall, cpu / n * 1e6)


class Run(NamedTuple):
    per_s: float  # messages per second
    cpu_us: float  # process CPU microseconds per message


class Countdown:
    """Counts delivery reports; ``done`` is set when ``n`` arrived (errors are counted too)."""

    def __init__(self, n: int) -> None:
        self.left = n
        self.errors = 0
        self.done = threading.Event()

    def hit(self, err: object) -> None:
        if err is not None:
            self.errors += 1
        self.left -= 1
        if self.left == 0:
            self.done.set()


Callback = Callable[[mq.MQError | None], None]


def _timed_produce(
    config: KafkaConfig,
    topic: str,
    values: list[bytes],
    send_all: Callable[[mq.KafkaProducer, Callback], None],
) -> Run:
    """Time ``send_all(producer, callback)`` until every delivery callback has fired."""
    count = Countdown(len(values))
    producer = mq.KafkaProducer(producer_properties(config, SERVICE))
    # Warm up: connection, metadata of the new topic and the idempotent producer id are set up
    # by the first delivery (0.5-1 s on this broker, quantized): not part of the throughput.
    producer.send_sync(mq.Message(topic, key=b"warmup", value=values[0]))
    clock = Clock()
    clock.start()
    send_all(producer, count.hit)
    assert count.done.wait(120), "im-infra produce did not finish"
    run = clock.stop(len(values))
    producer.close()
    assert count.errors == 0, f"{count.errors} delivery errors"
    return run


def produce_im_infra(
    config: KafkaConfig, topic: str, keys: list[bytes], values: list[bytes]
) -> Run:
    """``send`` per message."""

    def send_all(producer: mq.KafkaProducer, callback: Callback) -> None:
        for key, value in zip(keys, values, strict=True):
            producer.send(mq.Message(topic, key=key, value=value), callback)

    return _timed_produce(config, topic, values, send_all)


def produce_im_infra_batch(
    config: KafkaConfig, topic: str, keys: list[bytes], values: list[bytes]
) -> Run:
    """The same job through ``send_batch``: the loop builds a ``Message`` per value and hands
    them over 1000 at a time."""

    def send_all(producer: mq.KafkaProducer, callback: Callback) -> None:
        batch: list[mq.Message] = []
        for key, value in zip(keys, values, strict=True):
            batch.append(mq.Message(topic, key=key, value=value))
            if len(batch) == BATCH:
                producer.send_batch(batch, callback)
                batch = []
        producer.send_batch(batch, callback)

    return _timed_produce(config, topic, values, send_all)


def produce_raw(config: KafkaConfig, topic: str, keys: list[bytes], values: list[bytes]) -> Run:
    count = Countdown(len(values))
    producer = confluent_kafka.Producer(producer_properties(config, SERVICE))

    def on_delivery(err: Any, _msg: Any) -> None:
        count.hit(err)

    producer.produce(topic, value=values[0], key=b"warmup")  # the same warm-up as im-infra's
    producer.flush(30)
    clock = Clock()
    clock.start()
    for key, value in zip(keys, values, strict=True):
        while True:
            try:
                producer.produce(topic, value=value, key=key, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    producer.flush(120)
    assert count.done.wait(1), "raw produce did not finish"
    run = clock.stop(len(values))
    assert count.errors == 0, f"{count.errors} delivery errors"
    return run


def produce_aiokafka(
    brokers: str, topic: str, keys: list[bytes], values: list[bytes]
) -> float | None:
    try:
        import aiokafka
    except ImportError:
        return None

    async def run() -> float:
        producer = aiokafka.AIOKafkaProducer(
            bootstrap_servers=brokers,
            acks="all",
            enable_idempotence=True,
            compression_type="lz4" if _has_lz4() else None,
            linger_ms=5,
            max_batch_size=16384,
        )
        await producer.start()
        try:
            start = time.perf_counter()
            futures = [
                await producer.send(topic, value=v, key=k)
                for k, v in zip(keys, values, strict=True)
            ]
            await asyncio.gather(*futures)
            return len(values) / (time.perf_counter() - start)
        finally:
            await producer.stop()

    return asyncio.run(run())


def _has_lz4() -> bool:
    return importlib.util.find_spec("lz4") is not None


def faststream_available(module: str) -> bool:
    """Whether ``faststream.<module>`` ("kafka": aiokafka-based, "confluent") is importable."""
    try:
        importlib.import_module(f"faststream.{module}")
    except ImportError:
        return False
    return True


ProduceSide = Callable[[KafkaConfig, str, list[bytes], list[bytes]], Run]


def produce_faststream(module: str, mode: str, n: int) -> ProduceSide:
    """faststream as its users publish, on the first ``n`` of the messages: a ``KafkaBroker``
    (acks=all, idempotence) and, by ``mode``, ``"publish"``: ``await broker.publish(value,
    topic, key=key)`` per message (each awaits its delivery, faststream's default);
    ``"no_confirm"``: the same with ``no_confirm=True``, the returned futures awaited at the end
    (what ``send`` with a callback does); ``"batch"``: ``await broker.publish_batch(
    *(KafkaPublishMessage(value, key=key) ...), topic=topic)`` per 1000 messages."""

    def run_side(config: KafkaConfig, topic: str, keys: list[bytes], values: list[bytes]) -> Run:
        fs = importlib.import_module(f"faststream.{module}")
        options: dict[str, Any] = {"acks": "all", "enable_idempotence": True}
        if mode == "batch" and module == "kafka":
            # aiokafka's batch holds 16 KiB by default; 1000 messages of 200 bytes need more.
            options["max_batch_size"] = 1 << 20
        keys, values = keys[:n], values[:n]

        async def main() -> Run:
            broker = fs.KafkaBroker(config.common.brokers, logger=None, **options)
            await broker.start()
            try:
                await broker.publish(values[0], topic, key=b"warmup")  # as the other sides'
                clock = Clock()
                clock.start()
                if mode == "batch":
                    for i in range(0, len(values), BATCH):
                        chunk = zip(keys[i : i + BATCH], values[i : i + BATCH], strict=True)
                        await broker.publish_batch(
                            *(fs.KafkaPublishMessage(v, key=k) for k, v in chunk), topic=topic
                        )
                elif mode == "no_confirm":
                    futures = [
                        await broker.publish(value, topic, key=key, no_confirm=True)
                        for key, value in zip(keys, values, strict=True)
                    ]
                    await asyncio.gather(*futures)
                else:
                    for key, value in zip(keys, values, strict=True):
                        await broker.publish(value, topic, key=key)
                return clock.stop(len(values))
            finally:
                await broker.stop()

        return asyncio.run(main())

    return run_side


def consume_im_infra(config: KafkaConfig, topic: str, n: int, prefetch: float) -> Run:
    props = consumer_properties(config, SERVICE, f"bench-{uuid.uuid4().hex[:8]}")
    consumer = mq.KafkaConsumer(props)
    clock = Clock()
    seen = size = 0
    run: Run | None = None

    def handle(msg: mq.Message) -> None:
        nonlocal seen, size, run
        size += len(msg.key or b"") + len(msg.value or b"")
        if seen == 0:
            time.sleep(prefetch)  # let librdkafka fetch the topic into its local queue
            clock.start()
        seen += 1
        if seen == n:
            run = clock.stop(n - 1)  # before close(): leaving the group is not measured
            consumer.close()

    consumer.subscribe([topic], handle)
    assert run is not None
    return run


def consume_async_im_infra(config: KafkaConfig, topic: str, n: int, prefetch: float) -> Run:
    """The same job on the asyncio consumer: an ``async def`` handler per message."""
    props = consumer_properties(config, SERVICE, f"bench-{uuid.uuid4().hex[:8]}")
    clock = Clock()
    seen = size = 0
    run: Run | None = None

    async def main() -> None:
        consumer = mq.AsyncKafkaConsumer(mq.KafkaConsumer(props))

        async def handle(msg: mq.Message) -> None:
            nonlocal seen, size, run
            size += len(msg.key or b"") + len(msg.value or b"")
            if seen == 0:
                await asyncio.sleep(prefetch)  # librdkafka fetches on its own threads
                clock.start()
            seen += 1
            if seen == n:
                run = clock.stop(n - 1)
                await consumer.close()  # from the callback: returns at once, the loop ends

        await consumer.subscribe([topic], handle)
        await consumer.close()

    asyncio.run(main())
    assert run is not None
    return run


def consume_aiokafka(brokers: str, topic: str, n: int, prefetch: float) -> Run | None:
    """The same job on aiokafka: ``getmany`` batches, the same ``async def`` handler."""
    try:
        import aiokafka
    except ImportError:
        return None
    clock = Clock()
    seen = size = 0
    run: Run | None = None

    async def handle(msg: Any) -> None:
        nonlocal seen, size, run
        size += len(msg.key or b"") + len(msg.value or b"")
        if seen == 0:
            await asyncio.sleep(prefetch)  # aiokafka prefetches on the event loop meanwhile
            clock.start()
        seen += 1
        if seen == n:
            run = clock.stop(n - 1)

    async def main() -> None:
        consumer = aiokafka.AIOKafkaConsumer(
            topic,
            bootstrap_servers=brokers,
            group_id=f"bench-{uuid.uuid4().hex[:8]}",
            auto_offset_reset="earliest",
            enable_auto_commit=True,
        )
        await consumer.start()
        try:
            while run is None:
                batches = await consumer.getmany(timeout_ms=200, max_records=500)
                for msgs in batches.values():
                    for msg in msgs:
                        await handle(msg)
                        if run is not None:
                            break
        finally:
            await consumer.stop()

    asyncio.run(main())
    return run


def consume_faststream(brokers: str, topic: str, n: int, prefetch: float) -> Run | None:
    """The same job on faststream's aiokafka broker: a subscriber whose ``async def`` handler
    takes the body and the ``KafkaMessage`` (for the key); auto-commit, its default."""
    if not faststream_available("kafka"):
        return None
    from faststream.kafka import KafkaBroker
    from faststream.kafka.annotations import KafkaMessage

    clock = Clock()
    seen = size = 0
    run: Run | None = None

    async def main() -> None:
        done = asyncio.Event()
        broker = KafkaBroker(brokers, logger=None)

        @broker.subscriber(
            topic, group_id=f"bench-{uuid.uuid4().hex[:8]}", auto_offset_reset="earliest"
        )
        async def handle(body: bytes, msg: KafkaMessage) -> None:
            nonlocal seen, size, run
            record = msg.raw_message  # aiokafka's ConsumerRecord (a tuple of them in batch mode)
            assert not isinstance(record, tuple)
            size += len(record.key or b"") + len(body)
            if seen == 0:
                await asyncio.sleep(prefetch)  # aiokafka prefetches on the event loop meanwhile
                clock.start()
            seen += 1
            if seen == n:
                run = clock.stop(n - 1)
                done.set()

        await broker.start()
        try:
            await asyncio.wait_for(done.wait(), 300)
        finally:
            await broker.stop()

    asyncio.run(main())
    return run


def consume_raw(config: KafkaConfig, topic: str, n: int, prefetch: float) -> Run:
    """The same job on raw confluent-kafka: a handler call per message, then store its offset."""
    props = consumer_properties(config, SERVICE, f"bench-{uuid.uuid4().hex[:8]}")
    consumer = confluent_kafka.Consumer(props)
    consumer.subscribe([topic])
    clock = Clock()
    seen = size = 0
    run: Run | None = None

    def handle(msg: Any) -> None:
        nonlocal seen, size, run
        size += len(msg.key() or b"") + len(msg.value() or b"")
        if seen == 0:
            time.sleep(prefetch)  # let librdkafka fetch the topic into its local queue
            clock.start()
        seen += 1
        if seen == n:
            run = clock.stop(n - 1)

    while run is None:
        first_msg = consumer.poll(0.2)
        if first_msg is None:
            continue
        for msg in (first_msg, *consumer.consume(499, 0)):
            if msg.error() is None:
                handle(msg)
                consumer.store_offsets(message=msg)
                if run is not None:
                    break
    consumer.close()
    return run


IO_KEYS = 1000


def io_payloads(n: int) -> tuple[list[bytes], list[bytes]]:
    keys = [f"user-{i % IO_KEYS}".encode() for i in range(n)]
    values = [str(i // IO_KEYS).encode() for i in range(n)]
    return keys, values


class OrderCheck:
    """Counts messages and per-key order violations (thread-safe enough: one key at a time)."""

    def __init__(self) -> None:
        self.last: dict[bytes, int] = {}
        self.violations = 0
        self.seen = 0

    def see(self, msg: mq.Message) -> None:
        key, seq = msg.key, int(msg.value or b"0")
        assert isinstance(key, bytes)
        if seq != self.last.get(key, -1) + 1:
            self.violations += 1
        self.last[key] = seq


def io_handler(
    config: KafkaConfig, topic: str, n: int, concurrency: int, asyncio_side: bool
) -> tuple[float, int]:
    """Messages/s through a 1 ms handler, and the order violations seen."""
    cfg = config.model_copy(
        update={"consumer": config.consumer.model_copy(update={"concurrency": concurrency})}
    )
    props = consumer_properties(cfg, SERVICE, f"bench-{uuid.uuid4().hex[:8]}")
    check, lock = OrderCheck(), threading.Lock()
    start = 0.0
    rate = 0.0

    def count(msg: mq.Message) -> bool:
        nonlocal start, rate
        with lock:
            check.see(msg)
            check.seen += 1
            if check.seen == 1:
                start = time.perf_counter()
            if check.seen == n:
                rate = (n - 1) / (time.perf_counter() - start)
                return True
        return False

    if not asyncio_side:
        consumer = mq.KafkaConsumer(props, concurrency=concurrency)

        def handle(msg: mq.Message) -> None:
            time.sleep(0.001)
            if count(msg):
                consumer.close()

        consumer.subscribe([topic], handle)
    else:

        async def main() -> None:
            consumer = mq.AsyncKafkaConsumer(mq.KafkaConsumer(props, concurrency=concurrency))

            async def handle(msg: mq.Message) -> None:
                await asyncio.sleep(0.001)
                if count(msg):
                    await consumer.close()

            await consumer.subscribe([topic], handle)
            await consumer.close()

        asyncio.run(main())
    assert check.seen >= n, f"only {check.seen} of {n} messages"
    return rate, check.violations


def send_sync_p99_ms(config: KafkaConfig, topic: str, n: int) -> float:
    latencies = []
    with mq.KafkaProducer(producer_properties(config, SERVICE)) as producer:
        value = os.urandom(VALUE_SIZE)
        producer.send_sync(mq.Message(topic, key=b"warmup", value=value))
        for i in range(n):
            start = time.perf_counter()
            producer.send_sync(mq.Message(topic, key=f"k{i}".encode(), value=value))
            latencies.append((time.perf_counter() - start) * 1000)
    latencies.sort()
    return latencies[int(0.99 * (len(latencies) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--brokers", default=os.environ.get(mq.BROKERS_ENV))
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument(
        "--consume-messages",
        type=int,
        # 250k x ~230 bytes on the wire fit in librdkafka's default prefetch queue (64 MB,
        # queued.max.messages.kbytes), so the clocked part fetches nothing from the broker.
        default=250_000,
        help="messages per consume run (long enough for a steady figure)",
    )
    parser.add_argument("--rounds", type=int, default=7, help="alternating rounds per side")
    parser.add_argument(
        "--produce-rounds",
        type=int,
        default=None,
        help="produce rounds (default: --rounds; 0 measures consuming only)",
    )
    parser.add_argument(
        "--faststream-messages",
        type=int,
        default=10_000,
        help="messages per faststream produce and consume run (~1.5k-3k/s here)",
    )
    parser.add_argument("--sync-sends", type=int, default=2000)
    parser.add_argument(
        "--prefetch-wait",
        type=float,
        default=2.0,
        help="seconds both consumers wait after their first message, before the clock starts",
    )
    parser.add_argument(
        "--io-messages",
        type=int,
        default=1500,
        help="messages per sequential I/O-handler run (x12 for concurrency=16); 0 skips it",
    )
    parser.add_argument("--io-rounds", type=int, default=3)
    parser.add_argument("--skip-consume", action="store_true", help="only the I/O handler part")
    parser.add_argument("--otel-sdk", action="store_true", help="install the metrics SDK")
    args = parser.parse_args()
    reader = None
    if args.otel_sdk:
        from opentelemetry import metrics
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader

        reader = InMemoryMetricReader()
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    if not args.brokers:
        sys.exit(f"no broker: pass --brokers or set {mq.BROKERS_ENV} (scripts/devstack env)")
    clog.init(service=SERVICE, level="WARNING")
    config = KafkaConfig.model_validate(
        {"common": {"brokers": [args.brokers]}, "consumer": {"autoOffsetReset": "earliest"}}
    )
    n = args.messages
    keys, values = payloads(n)
    admin = mq.KafkaAdminClient({"bootstrap.servers": args.brokers})
    topics: list[str] = []

    def topic(tag: str, partitions: int = 3) -> str:
        name = f"bench-mq-{tag}-{uuid.uuid4().hex[:8]}"
        admin.create_topic(name, partitions, 1)
        topics.append(name)
        return name

    def drop(name: str) -> None:
        """Delete a topic now: the devstack broker keeps every topic's data in memory."""
        try:
            admin.delete_topic(name)
        except mq.MQError as exc:
            log(f"cleanup: {exc}")
        topics.remove(name)

    try:
        ours: list[Run] = []
        batched: list[Run] = []
        raw: list[Run] = []
        aio: list[float] = []
        sides: dict[str, tuple[ProduceSide, list[Run]]] = {
            "send": (produce_im_infra, ours),
            "send_batch": (produce_im_infra_batch, batched),
            "raw": (produce_raw, raw),
        }
        # faststream: each module's publish (confirmed, not confirmed) and publish_batch.
        fs_runs: dict[str, list[Run]] = {}
        for module, tag in (("kafka", "faststream"), ("confluent", "faststream_confluent")):
            if not faststream_available(module):
                log(f"faststream.{module} is not importable: no faststream figure for it")
                continue
            for mode, name in (
                ("publish", tag),
                ("no_confirm", f"{tag}_no_confirm"),
                ("batch", f"{tag}_batch"),
            ):
                fs_runs[name] = []
                sides[name] = (
                    produce_faststream(module, mode, args.faststream_messages),
                    fs_runs[name],
                )
        produce_rounds = args.rounds if args.produce_rounds is None else args.produce_rounds
        for r in range(produce_rounds):
            # Alternate the order so that broker warm-up and noise favour no side.
            for side in list(sides) if r % 2 == 0 else list(sides)[::-1]:
                run_side, runs = sides[side]
                name = topic("p")
                runs.append(run_side(config, name, keys, values))
                drop(name)
            log(
                f"produce round {r}: "
                + ", ".join(
                    f"{side} {runs[-1].per_s:,.0f}/s ({runs[-1].cpu_us:.2f} us cpu)"
                    for side, (_, runs) in sides.items()
                )
            )
        aio_rate = None
        if produce_rounds:
            aio_topic = topic("p-aio")
            aio_rate = produce_aiokafka(args.brokers, aio_topic, keys, values)
            drop(aio_topic)
        if aio_rate is not None:
            aio.append(aio_rate)
            log(f"aiokafka produce: {aio_rate:,.0f}/s")
        elif produce_rounds:
            log("aiokafka is not installed: no reference figure")

        # Uncompressed, so that aiokafka reads it without the optional lz4 package.
        plain = config.model_copy(
            update={"producer": config.producer.model_copy(update={"compression": "none"})}
        )
        source, nc = topic("c"), args.consume_messages
        nfs = min(nc, args.faststream_messages)  # faststream consumes ~1.5k/s here
        if not args.skip_consume:
            ckeys, cvalues = payloads(nc)
            produce_raw(plain, source, ckeys, cvalues)
        c_ours: list[Run] = []
        c_async: list[Run] = []
        c_raw: list[Run] = []
        c_aiokafka: list[Run] = []
        c_faststream: list[Run] = []
        consume_sides: dict[str, tuple[Callable[[], Run | None], list[Run]]] = {
            "ours": (lambda: consume_im_infra(config, source, nc, args.prefetch_wait), c_ours),
            "async": (
                lambda: consume_async_im_infra(config, source, nc, args.prefetch_wait),
                c_async,
            ),
            "raw": (lambda: consume_raw(config, source, nc, args.prefetch_wait), c_raw),
            "aiokafka": (
                lambda: consume_aiokafka(args.brokers, source, nc, args.prefetch_wait),
                c_aiokafka,
            ),
            "faststream": (
                lambda: consume_faststream(args.brokers, source, nfs, args.prefetch_wait),
                c_faststream,
            ),
        }
        for r in range(0 if args.skip_consume else args.rounds):
            for side in list(consume_sides) if r % 2 == 0 else list(consume_sides)[::-1]:
                consume_side, c_runs = consume_sides[side]
                got = consume_side()
                if got is not None:
                    c_runs.append(got)
            log(
                f"consume round {r}: "
                + ", ".join(
                    f"{side} {runs[-1].per_s:,.0f}/s ({runs[-1].cpu_us:.2f} us cpu)"
                    for side, (_, runs) in consume_sides.items()
                    if runs
                )
            )
        io: dict[str, list[tuple[float, int]]] = defaultdict(list)
        if args.io_messages:
            io_seq, io_conc = args.io_messages, args.io_messages * 12
            io_topic = topic("io", 6)
            produce_raw(plain, io_topic, *io_payloads(io_conc))
            for r in range(args.io_rounds):
                for side in ("sync", "asyncio"):
                    aside = side == "asyncio"
                    io[f"{side}-1"].append(io_handler(config, io_topic, io_seq, 1, aside))
                    io[f"{side}-16"].append(io_handler(config, io_topic, io_conc, 16, aside))
                log(
                    f"io round {r}: "
                    + ", ".join(f"{k} {v[-1][0]:,.0f}/s ({v[-1][1]} bad)" for k, v in io.items())
                )
        p99 = send_sync_p99_ms(config, topic("sync"), args.sync_sends)
        log(f"send_sync p99: {p99:.2f} ms (lingerMs={config.producer.linger_ms})")
    finally:
        for name in list(topics):
            drop(name)
        admin.close()

    def rate(runs: list[Run]) -> float:
        return max(r.per_s for r in runs)

    def median_ratio(runs: list[Run], base: list[Run]) -> float:
        return round(
            statistics.median(r.per_s for r in runs) / statistics.median(r.per_s for r in base), 3
        )

    def cpu(runs: list[Run]) -> float:
        return round(statistics.median(r.cpu_us for r in runs), 2)

    result: dict[str, Any] = {"bench": "mq"}
    if io:
        for side in ("sync", "asyncio"):
            seq = [r for r, _ in io[f"{side}-1"]]
            conc = [r for r, _ in io[f"{side}-16"]]
            tag = "" if side == "sync" else "_async"
            result[f"io_handler_per_s{tag}"] = round(max(conc))
            result[f"io_handler_sequential_per_s{tag}"] = round(max(seq))
            result[f"io_handler_ratio_vs_sequential{tag}"] = round(max(conc) / max(seq), 2)
            result[f"median_io_handler_ratio{tag}"] = round(
                statistics.median(conc) / statistics.median(seq), 2
            )
            io_runs = io[f"{side}-1"] + io[f"{side}-16"]
            result[f"io_order_violations{tag}"] = sum(v for _, v in io_runs)
    if args.skip_consume:
        print(json.dumps(result, separators=(",", ":")))
        return
    consume, raw_consume = rate(c_ours), rate(c_raw)
    if ours:
        produce, raw_produce, produce_batch = rate(ours), rate(raw), rate(batched)
        result.update(
            {
                "produce_per_s": round(produce),
                "raw_produce_per_s": round(raw_produce),
                "produce_ratio_vs_confluent": round(produce / raw_produce, 3),
                "produce_batch_per_s": round(produce_batch),
                "produce_batch_ratio_vs_confluent": round(produce_batch / raw_produce, 3),
                "median_produce_ratio": median_ratio(ours, raw),
                "median_produce_batch_ratio": median_ratio(batched, raw),
                "produce_cpu_us_per_msg": cpu(ours),
                "produce_batch_cpu_us_per_msg": cpu(batched),
                "raw_produce_cpu_us_per_msg": cpu(raw),
            }
        )
    result |= {
        "consume_per_s": round(consume),
        "raw_consume_per_s": round(raw_consume),
        "consume_ratio_vs_confluent": round(consume / raw_consume, 3),
        "consume_async_per_s": round(rate(c_async)),
        "consume_async_ratio_vs_confluent": round(rate(c_async) / raw_consume, 3),
        "median_consume_async_ratio": median_ratio(c_async, c_raw),
        "consume_async_cpu_us_per_msg": cpu(c_async),
        "send_sync_p99_ms": round(p99, 3),
        "median_consume_ratio": median_ratio(c_ours, c_raw),
        "consume_cpu_us_per_msg": cpu(c_ours),
        "raw_consume_cpu_us_per_msg": cpu(c_raw),
    }
    if aio:
        result["aiokafka_produce_per_s"] = round(aio[0])
    if c_aiokafka:
        result["aiokafka_consume_per_s"] = round(rate(c_aiokafka))
        # Ours (asyncio) against aiokafka, both with an async def handler.
        result["consume_ratio_vs_aiokafka"] = round(rate(c_async) / rate(c_aiokafka), 3)
        result["median_consume_ratio_vs_aiokafka"] = median_ratio(c_async, c_aiokafka)
    if ours:
        for name, fs in fs_runs.items():
            result[f"{name}_produce_per_s"] = round(rate(fs))
            result[f"{name}_produce_cpu_us_per_msg"] = cpu(fs)
            # send against publish (confirmed or not), send_batch against publish_batch.
            mine, tag = (batched, "produce_batch") if name.endswith("_batch") else (ours, "produce")
            result[f"{tag}_ratio_vs_{name}"] = round(rate(mine) / rate(fs), 3)
            result[f"median_{tag}_ratio_vs_{name}"] = median_ratio(mine, fs)
    if c_faststream:
        result["faststream_consume_per_s"] = round(rate(c_faststream))
        result["faststream_consume_cpu_us_per_msg"] = cpu(c_faststream)
        # Ours (asyncio) against faststream's subscriber, both with an async def handler.
        result["consume_async_ratio_vs_faststream"] = round(rate(c_async) / rate(c_faststream), 3)
        result["median_consume_async_ratio_vs_faststream"] = median_ratio(c_async, c_faststream)
    result["otel_sdk"] = args.otel_sdk
    if reader is not None:
        start = time.perf_counter()
        data = reader.get_metrics_data()
        result["metrics_collect_ms"] = round((time.perf_counter() - start) * 1000, 2)
        names = (
            {m.name for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
            if data
            else set()
        )
        result["metrics_emitted"] = sorted(n for n in names if "messaging" in n or "mq" in n)
    print(json.dumps(result, separators=(",", ":")))


if __name__ == "__main__":
    main()
