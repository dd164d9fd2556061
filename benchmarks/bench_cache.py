#!/usr/bin/env python3
"""im_infra.cache vs raw redis-py on the same Redis, in the same run.

Measures get/set ops/s (blocking), get ops/s (asyncio) and pipelined SETs (100 per pipeline,
no MULTI), each through im-infra and through a plain redis-py client configured the same way
(one connection in use, RESP2, str replies). Rounds alternate between the two so machine noise
hits both alike; the figure per case is the median over rounds.

    eval "$(scripts/devstack env)"; uv run python benchmarks/bench_cache.py [--url URL] [--rounds N]
        [--otel-sdk]

``--otel-sdk`` installs the OpenTelemetry SDK (in-memory reader) first, so im-infra's metrics are
recorded: compare the ratios with and without it for the cost of metrics. redis-py has none.

Last line: one JSON object {"bench":"cache","otel_sdk":…,"set_ratio_vs_redis_py":…,
"get_ratio_vs_redis_py":…,"async_get_ratio_vs_redis_py":…,"pipeline_ratio_vs_redis_py":…}
(ratio = im-infra / redis-py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import redis
import redis.asyncio

from im_infra import cache

SERVICE = "bench-cache"
KEYS = 1000
VALUE = "v" * 100


BATCHES = 40  # per round: the two sides alternate in small batches so noise hits both alike


def _summary(times: list[tuple[float, float]], ops: int) -> dict[str, list[float]]:
    """Per round: ops/s of each side and the ratio im-infra / redis-py."""
    return {
        "ours": [ops / t_ours for t_ours, _ in times],
        "raw": [ops / t_raw for _, t_raw in times],
        "ratio": [t_raw / t_ours for t_ours, t_raw in times],
    }


def interleaved(
    ours: Callable[[int], None], raw: Callable[[int], None], ops: int, rounds: int
) -> dict[str, list[float]]:
    batch = max(1, ops // BATCHES)
    times = []
    for _ in range(rounds):
        spent = [0.0, 0.0]
        for b in range(BATCHES):
            order = ((0, ours), (1, raw)) if b % 2 == 0 else ((1, raw), (0, ours))
            for side, fn in order:
                start = time.perf_counter()
                fn(batch)
                spent[side] += time.perf_counter() - start
        times.append((spent[0], spent[1]))
    return _summary(times, batch * BATCHES)


def install_otel_sdk() -> None:
    """Metrics on: the SDK's MeterProvider with an in-memory reader (im-infra's instruments,
    created at import through the API's proxy, start recording into it)."""
    from opentelemetry import metrics
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--url", default=os.environ.get("IM_INFRA_REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--ops", type=int, default=3000, help="commands per round and case")
    parser.add_argument(
        "--otel-sdk",
        action="store_true",
        help="install the OpenTelemetry SDK (in-memory metric reader) first: metrics on",
    )
    args = parser.parse_args()
    if args.otel_sdk:
        install_otel_sdk()

    parts = urlsplit(args.url)
    address = f"{parts.hostname}:{parts.port or 6379}"
    db = int(parts.path.strip("/") or 0)
    prefix = f"{SERVICE}:"
    keys = [f"k{i}" for i in range(KEYS)]
    full = [prefix + k for k in keys]

    ours = cache.new(SERVICE, address=address, db=db)
    raw = redis.Redis(host=parts.hostname, port=parts.port or 6379, db=db, decode_responses=True)

    def ours_set(n: int) -> None:
        s = ours.set
        for i in range(n):
            s(keys[i % KEYS], VALUE)

    def raw_set(n: int) -> None:
        s = raw.set
        for i in range(n):
            s(full[i % KEYS], VALUE)

    def ours_get(n: int) -> None:
        g = ours.get
        for i in range(n):
            g(keys[i % KEYS])

    def raw_get(n: int) -> None:
        g = raw.get
        for i in range(n):
            g(full[i % KEYS])

    def ours_pipe(n: int) -> None:
        for b in range(n // 100):
            p = ours.pipeline(transaction=False)
            for i in range(100):
                p.set(keys[(b * 100 + i) % KEYS], VALUE)
            p.execute()

    def raw_pipe(n: int) -> None:
        for b in range(n // 100):
            p = raw.pipeline(transaction=False)
            for i in range(100):
                p.set(full[(b * 100 + i) % KEYS], VALUE)
            p.execute()

    cases: dict[str, tuple[Callable[[int], None], Callable[[int], None], int]] = {
        "set": (ours_set, raw_set, args.ops),
        "get": (ours_get, raw_get, args.ops),
        "pipeline": (ours_pipe, raw_pipe, args.ops * 10),
    }
    results: dict[str, dict[str, list[float]]] = {}
    for name, (o, r, n) in cases.items():
        o(n // 10)  # warm-up: connections, key population
        r(n // 10)
        results[name] = interleaved(o, r, n, args.rounds)

    # asyncio: each batch runs to completion on one loop, for both sides alike
    loop = asyncio.new_event_loop()
    aours = cache.new_async(SERVICE, address=address, db=db)
    araw = redis.asyncio.Redis(
        host=parts.hostname, port=parts.port or 6379, db=db, decode_responses=True
    )

    async def ours_aget(n: int) -> None:
        g = aours.get
        for i in range(n):
            await g(keys[i % KEYS])

    async def raw_aget(n: int) -> None:
        g = araw.get
        for i in range(n):
            await g(full[i % KEYS])

    def on_loop(fn: Callable[[int], Any]) -> Callable[[int], None]:
        return lambda n: loop.run_until_complete(fn(n))

    on_loop(ours_aget)(args.ops // 10)
    on_loop(raw_aget)(args.ops // 10)
    results["async_get"] = interleaved(on_loop(ours_aget), on_loop(raw_aget), args.ops, args.rounds)
    loop.run_until_complete(aours.close())
    loop.run_until_complete(araw.aclose())
    loop.close()

    ours.delete(*keys)
    ours.close()
    raw.close()

    summary: dict[str, Any] = {"bench": "cache", "otel_sdk": args.otel_sdk}
    for name in ("set", "get", "async_get", "pipeline"):
        per = results[name]
        ours_rate, raw_rate = statistics.median(per["ours"]), statistics.median(per["raw"])
        ratio = statistics.median(per["ratio"])
        print(
            f"{name:10s} im-infra {ours_rate:9.0f} ops/s   redis-py {raw_rate:9.0f} ops/s"
            f"   ratio {ratio:.3f}"
        )
        summary[f"{name}_ratio_vs_redis_py"] = round(ratio, 3)
    print(json.dumps(summary, separators=(",", ":")))


if __name__ == "__main__":
    main()
