"""Benchmark im_infra.uid: Snowflake IDs per second, against the Python floor and Snowflake's limit.

Measures, interleaved in the same run (so a busy machine affects all of them alike):

- ``next_id()`` in a loop, IDs/s;
- ``next_ids(10_000)`` in a loop, IDs/s;
- a plain ``itertools.count`` loop (``next(counter)``): the cheapest possible Python loop that
  produces one int per iteration, the floor any pure-Python generator is measured against;
- the Snowflake limit: 4,096 sequence numbers per millisecond per worker = 4,096,000 IDs/s.

With ``--otel-sdk`` the OpenTelemetry SDK is installed first (a ``MeterProvider`` with an
in-memory reader), so ``im_infra.uid.ids.issued`` is live, and the reader collects after every
round (checking that the counter matches the IDs issued); without it the metrics API is a no-op.

Each figure is the best of ``--rounds`` rounds (the usual way to filter out time stolen by other
processes). Targets on the 2-core CI machine: next_id >= 1.5M/s, next_ids >= 3.5M/s (85 % of the
limit). The last line printed is one JSON object:
``{"bench":"uid","otel_sdk":false,"next_id_per_s":...,"next_ids_per_s":...,"count_loop_per_s":...,
"limit_per_s":4096000}``

    uv run python benchmarks/bench_uid.py [--rounds 5] [--ids 2000000] [--otel-sdk]
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from collections.abc import Callable
from typing import Any

from im_infra import uid

LIMIT_PER_S = (uid.MAX_SEQUENCE + 1) * 1000  # 4,096,000
BATCH = 10_000


def count_loop(n: int) -> None:
    counter = itertools.count()
    nxt = next
    for _ in range(n):
        nxt(counter)


def next_id_loop(gen: uid.SnowflakeGenerator) -> Callable[[int], None]:
    def run(n: int) -> None:
        next_id = gen.next_id
        for _ in range(n):
            next_id()

    return run


def next_ids_loop(gen: uid.SnowflakeGenerator) -> Callable[[int], None]:
    def run(n: int) -> None:
        next_ids = gen.next_ids
        for _ in range(n // BATCH):
            next_ids(BATCH)

    return run


def rate(fn: Callable[[int], None], n: int) -> float:
    start = time.perf_counter()
    fn(n)
    return n / (time.perf_counter() - start)


def install_sdk() -> Any:
    """Install the OpenTelemetry SDK with an in-memory reader; returns the reader."""
    from opentelemetry import metrics
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    return reader


def issued(reader: Any) -> int:
    """The value of im_infra.uid.ids.issued as the SDK collects it now."""
    data = reader.get_metrics_data()
    return sum(
        point.value
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
        if metric.name == "im_infra.uid.ids.issued"
        for point in metric.data.data_points
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds; the best is kept")
    parser.add_argument("--ids", type=int, default=2_000_000, help="IDs per measurement")
    parser.add_argument(
        "--otel-sdk", action="store_true", help="install the OpenTelemetry SDK (metrics on)"
    )
    args = parser.parse_args()
    n = max(BATCH, args.ids - args.ids % BATCH)
    reader = install_sdk() if args.otel_sdk else None

    gen = uid.new_generator(1)
    cases: dict[str, Callable[[int], None]] = {
        "count_loop": count_loop,
        "next_id": next_id_loop(gen),
        "next_ids": next_ids_loop(gen),
    }
    for fn in cases.values():  # warm-up
        fn(BATCH * 10)
    best = dict.fromkeys(cases, 0.0)
    expected = 20 * BATCH  # the warm-up's IDs
    for round_no in range(1, args.rounds + 1):
        figures = []
        for name, fn in cases.items():
            value = rate(fn, n)
            best[name] = max(best[name], value)
            figures.append(f"{name} {value / 1e6:.2f}M/s")
        print(f"round {round_no}: " + ", ".join(figures))
        expected += 2 * n
        if reader is not None:  # collect, as a periodic reader would, and check the count
            assert issued(reader) == expected, (issued(reader), expected)

    # the IDs are still right after all that (strictly increasing, this worker)
    tail = gen.next_ids(BATCH)
    assert all(a < b for a, b in itertools.pairwise(tail))
    assert uid.parse(tail[-1]).worker == 1

    floor = best["count_loop"]
    for name, target in (("next_id", 1_500_000), ("next_ids", 3_500_000)):
        value = best[name]
        print(
            f"{name:9s} {value:>12,.0f} IDs/s  {value / LIMIT_PER_S:6.1%} of the Snowflake limit, "
            f"{value / floor:6.1%} of the count loop, target {target:,}: "
            f"{'met' if value >= target else 'NOT met'}"
        )
    print(f"count loop {floor:>11,.0f} /s (Python floor); limit {LIMIT_PER_S:,} IDs/s per worker")
    print(
        json.dumps(
            {
                "bench": "uid",
                "otel_sdk": bool(args.otel_sdk),
                "next_id_per_s": round(best["next_id"]),
                "next_ids_per_s": round(best["next_ids"]),
                "count_loop_per_s": round(floor),
                "limit_per_s": LIMIT_PER_S,
            },
            separators=(",", ":"),
        )
    )


if __name__ == "__main__":
    main()
