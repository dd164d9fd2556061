"""CPU instructions per message of mq's Python paths against raw confluent-kafka (cachegrind).

Wall-clock rates on a shared 2-core machine swing by 2x between runs (bench_mq.py's figures);
instruction counts do not (+-2 %), so this is how a change to a per-message path is judged. No
broker: confluent-kafka ``Message`` objects are built in memory (runs of 50 per partition, as
librdkafka hands them out), the consumer has a manual assignment (``store_offsets`` is local) and
the producers point at a closed port (messages stay queued). Each case runs under
``valgrind --tool=cachegrind --cache-sim=no`` with 1 and with 3 passes over the messages; the
difference over 2 x N messages is the per-message cost, without start-up.

Cases (consume: the handler reads key and value and counts, as in bench_mq.py):
- ``consume_raw``: confluent-kafka's at-least-once loop (handler, ``store_offsets`` per message);
- ``consume``: ``KafkaConsumer``'s batch loop (``ConsumerCore.consume_batch`` with the handler
  wrapped as ``subscribe`` wraps it, the stats poll hook included);
- ``consume_async``: the asyncio consumer's path: the poll-thread side (``consume_handed``) and
  ``BatchRunner`` on an event loop in another thread, an ``async def`` handler;
- ``consume_async_floor``: the least an asyncio consumer does: one hop per batch and an
  ``async def`` handler awaited per raw confluent message (no conversion, no bookkeeping);
- ``produce_raw``: ``produce(topic, value=, key=, on_delivery=)`` plus ``poll(0)`` per message;
- ``send`` / ``send_batch``: ``KafkaProducer`` with a ``Message`` built per value by the caller
  (``send_batch``: 1000 per call);
- ``delivery_raw`` / ``delivery``: one delivery report through a plain callback / mq's hook.

Usage: uv run python benchmarks/icount_mq.py [--messages N] [CASE ...]
(runs valgrind itself; ~15 s per case). The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any

import confluent_kafka

from im_infra import clog, mq
from im_infra.mq._internal.consumer_core import ConsumerCore
from im_infra.mq._internal.handoff import BatchRunner, CallbackSlot
from im_infra.mq.producer import core_of

VALUE = b"v" * 200
DEAD = "127.0.0.1:1"  # nothing listens: no broker traffic during the count


def _batches(n: int) -> list[list[Any]]:
    offsets = [0, 0, 0]
    batches: list[list[Any]] = []
    for start in range(0, n, 500):
        batch = []
        for j in range(min(500, n - start)):
            p = (j // 50) % 3
            batch.append(
                confluent_kafka.Message(
                    topic="t",
                    partition=p,
                    offset=offsets[p],
                    key=f"user-{j}".encode(),
                    value=VALUE,
                    headers=None,
                    timestamp=(1, 1_700_000_000_000),
                )
            )
            offsets[p] += 1
        batches.append(batch)
    return batches


def _case(name: str, n: int) -> Callable[[], None]:
    """The work of one pass over ``n`` messages (set-up done here, outside the count)."""
    size = [0]
    batches = _batches(n)
    flat = [m for b in batches for m in b]
    keys = [f"user-{i}".encode() for i in range(n)]
    core = ConsumerCore(
        {"bootstrap.servers": DEAD, "group.id": "icount", "enable.auto.offset.store": False}
    )
    core.client.assign([("t", p, 0) for p in range(3)])
    rdk = confluent_kafka.Consumer(
        {"bootstrap.servers": DEAD, "group.id": "icount", "enable.auto.offset.store": False}
    )
    rdk.assign([confluent_kafka.TopicPartition("t", p, 0) for p in range(3)])
    producer_props = {"bootstrap.servers": DEAD, "queue.buffering.max.messages": 2_000_000}

    def handle_raw(msg: Any) -> None:
        size[0] += len(msg.key() or b"") + len(msg.value() or b"")

    def handle(msg: mq.Message) -> None:
        size[0] += len(msg.key or b"") + len(msg.value or b"")

    async def ahandle(msg: mq.Message) -> None:
        size[0] += len(msg.key or b"") + len(msg.value or b"")

    async def ahandle_raw(msg: Any) -> None:
        size[0] += len(msg.key() or b"") + len(msg.value() or b"")

    def done(err: object) -> None:
        size[0] += 1

    def consume_raw() -> None:
        for batch in batches:
            for msg in batch:
                if msg.error() is None:
                    handle_raw(msg)
                    rdk.store_offsets(message=msg)

    wrapped = core.handling.wrap(handle)

    def consume() -> None:
        for batch in batches:
            core.metrics.polled(batch)
            core.consume_batch(batch, handle, wrapped)

    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    runner = BatchRunner(loop, ahandle, core, CallbackSlot())

    def consume_async() -> None:
        for batch in batches:
            core.metrics.polled(batch)
            core.consume_handed(batch, runner, handle)

    async def floor_batch(batch: list[Any]) -> None:
        for msg in batch:
            await ahandle_raw(msg)

    def consume_async_floor() -> None:
        for batch in batches:
            asyncio.run_coroutine_threadsafe(floor_batch(batch), loop).result()

    raw_producer = confluent_kafka.Producer(producer_props)
    producer = mq.KafkaProducer(producer_props)

    def on_delivery(err: Any, _msg: Any) -> None:
        done(err)

    def produce_raw() -> None:
        for key in keys:
            raw_producer.produce("t", value=VALUE, key=key, on_delivery=on_delivery)
            raw_producer.poll(0)

    def send() -> None:
        for key in keys:
            producer.send(mq.Message("t", key=key, value=VALUE), done)

    def send_batch() -> None:
        batch: list[mq.Message] = []
        for key in keys:
            batch.append(mq.Message("t", key=key, value=VALUE))
            if len(batch) == 1000:
                producer.send_batch(batch, done)
                batch = []
        producer.send_batch(batch, done)

    hook = core_of(producer).hook(done, None)
    report = hook.report

    def delivery() -> None:
        for kmsg in flat:
            report(None, kmsg)

    def delivery_raw() -> None:
        for kmsg in flat:
            on_delivery(None, kmsg)

    cases: dict[str, Callable[[], None]] = {
        "consume_raw": consume_raw,
        "consume": consume,
        "consume_async": consume_async,
        "consume_async_floor": consume_async_floor,
        "produce_raw": produce_raw,
        "send": send,
        "send_batch": send_batch,
        "delivery_raw": delivery_raw,
        "delivery": delivery,
    }
    return cases[name]


CASES = (
    "consume_raw",
    "consume",
    "consume_async",
    "consume_async_floor",
    "produce_raw",
    "send_batch",
    "send",
    "delivery_raw",
    "delivery",
)


def _instructions(case: str, n: int, passes: int) -> int:
    """Instructions of a whole process that runs ``case`` ``passes`` times (cachegrind)."""
    out = subprocess.run(
        [
            "valgrind",
            "--tool=cachegrind",
            "--cache-sim=no",
            "--cachegrind-out-file=/dev/null",
            sys.executable,
            __file__,
            "--run",
            case,
            "--messages",
            str(n),
            "--passes",
            str(passes),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    found = re.search(r"I\s+refs:\s+([\d,]+)", out.stderr)
    if found is None:
        raise RuntimeError(f"no instruction count from valgrind for {case}: {out.stderr[-500:]}")
    return int(found.group(1).replace(",", ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="*", help=f"default: all of {', '.join(CASES)}")
    parser.add_argument("--messages", type=int, default=4000)
    parser.add_argument("--run", help=argparse.SUPPRESS)  # inside valgrind: one case
    parser.add_argument("--passes", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        clog.init(service="icount-mq", level="ERROR")
        work = _case(args.run, args.messages)
        for _ in range(args.passes):
            work()
        os._exit(0)  # no close(): the producers would wait for a broker that is not there
    unknown = set(args.cases) - set(CASES)
    if unknown:
        parser.error(f"unknown cases {sorted(unknown)}; choose from {', '.join(CASES)}")
    result: dict[str, Any] = {"bench": "mq-instructions", "messages": args.messages}
    for case in args.cases or CASES:
        once = _instructions(case, args.messages, 1)
        thrice = _instructions(case, args.messages, 3)
        per_msg = round((thrice - once) / (2 * args.messages))
        result[f"{case}_instr_per_msg"] = per_msg
        print(f"{case}: {per_msg} instructions per message", file=sys.stderr, flush=True)
    print(json.dumps(result, separators=(",", ":")))


if __name__ == "__main__":
    main()
