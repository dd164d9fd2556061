#!/usr/bin/env python3
"""im_infra.coord on the local etcd: cached reads vs direct etcd reads, locks, instance IDs.

Measured in one run against the same etcd:
- config: ``LiveConfig.value`` (kept current by a watch) vs a direct etcd get of the document
  (``ConfigManager.get``), reads per second and their ratio;
- discovery: ``registry.discover()`` (watch-fed cache) vs a direct etcd range of the service's
  prefix (``client.range``), reads per second and their ratio;
- lock: acquire + release of an uncontended lock, p50/p99 in ms;
- instance IDs: ``instance_id()`` allocation (fresh allocator each time), p50 in ms.

With ``--otel-sdk`` the OpenTelemetry SDK is installed first (a ``MeterProvider`` with an
in-memory reader), so coord's metrics are recorded (``im_infra.coord.lock.wait.duration`` on
every acquisition, registrations...); the run ends by checking the lock histogram's count.
Without it the metrics API is a no-op.

    eval "$(scripts/devstack env)"
    uv run python benchmarks/bench_coord.py [--endpoints E] [--otel-sdk]

Last line: one JSON object {"bench":"coord","otel_sdk":…,"cached_get_per_s":…,"etcd_get_per_s":…,
"cached_get_ratio":…,"discover_cached_per_s":…,"etcd_range_per_s":…,"discover_ratio":…,
"lock_p50_ms":…,"lock_p99_ms":…,"instance_alloc_p50_ms":…}.
Targets: both ratios >= 100; lock_p99_ms < 20 on the local stack.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from im_infra import clog, coord
from im_infra.coord._internal import metrics as coord_metrics
from im_infra.coord.instance import EtcdInstancer


class Kafka(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    brokers: list[str] = Field(default_factory=lambda: ["localhost:9092"])
    acks: str = "all"
    batch_size: int = Field(16384, alias="batchSize")


def rate(fn: Callable[[], object], seconds: float) -> float:
    """Calls per second of ``fn`` over about ``seconds`` (checked every 64 calls)."""
    n = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(64):
            fn()
        n += 64
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - start)


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def install_sdk() -> Any:
    """Install the OpenTelemetry SDK with an in-memory reader; returns the reader."""
    from opentelemetry import metrics
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    return reader


def histogram_count(reader: Any, name: str) -> int:
    data = reader.get_metrics_data()
    return sum(
        point.count
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
        if metric.name == name
        for point in metric.data.data_points
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoints", default=os.environ.get("IM_INFRA_ETCD_ENDPOINTS"))
    parser.add_argument("--seconds", type=float, default=2.0, help="per read-rate measurement")
    parser.add_argument("--locks", type=int, default=500, help="lock acquire+release samples")
    parser.add_argument("--allocs", type=int, default=200, help="instance-id allocations")
    parser.add_argument(
        "--otel-sdk", action="store_true", help="install the OpenTelemetry SDK (metrics on)"
    )
    args = parser.parse_args()
    reader = install_sdk() if args.otel_sdk else None
    if not args.endpoints:
        parser.error('no endpoints: pass --endpoints or eval "$(scripts/devstack env)"')
    clog.init(service="bench-coord", level="WARNING")
    tag = f"bench{uuid.uuid4().hex[:8]}"
    result: dict[str, object] = {"bench": "coord", "otel_sdk": bool(args.otel_sdk)}

    with coord.connect(args.endpoints, service=tag, env=tag) as p:
        try:
            # ---- config: watched cache vs direct get
            p.config.set("global/kafka.yaml", "brokers: [k1:9092]\nacks: '1'\nbatchSize: 100\n")
            live = p.config.component("kafka", Kafka)
            live.wait_connected(5)
            cached = rate(lambda: live.value, args.seconds)
            direct = rate(lambda: p.config.get("global/kafka.yaml"), args.seconds)
            result.update(
                cached_get_per_s=round(cached),
                etcd_get_per_s=round(direct),
                cached_get_ratio=round(cached / direct, 1),
            )

            # ---- discovery: watched cache vs direct range
            for i in range(5):
                p.registry.register(coord.ServiceInstance(tag, f"n{i}", f"10.0.0.{i}:9000"))
            p.registry.discover(tag)
            prefix = f"/im-infra/services/{tag}/"
            disc = rate(lambda: p.registry.discover(tag), args.seconds)
            rng = rate(lambda: p.client.range(prefix, prefix=True), args.seconds)
            result.update(
                discover_cached_per_s=round(disc),
                etcd_range_per_s=round(rng),
                discover_ratio=round(disc / rng, 1),
            )

            # ---- lock acquire + release (uncontended)
            for _ in range(20):  # warm-up
                p.lock.acquire(tag, ttl=10).release()
            samples = []
            for _ in range(args.locks):
                t0 = time.perf_counter()
                lock = p.lock.acquire(tag, ttl=10, timeout=5)
                lock.release()
                samples.append((time.perf_counter() - t0) * 1000)
            result.update(
                lock_p50_ms=round(statistics.median(samples), 3),
                lock_p99_ms=round(percentile(samples, 99), 3),
            )

            # ---- instance-ID allocation (a fresh allocator each time, released after)
            allocs = []
            for _ in range(args.allocs):
                inst = EtcdInstancer(p.client, p.keeper, tag, ttl=10)
                t0 = time.perf_counter()
                inst.instance_id()
                allocs.append((time.perf_counter() - t0) * 1000)
                inst.release()
            result.update(
                instance_alloc_p50_ms=round(statistics.median(allocs), 3),
                instance_alloc_p99_ms=round(percentile(allocs, 99), 3),
            )
        finally:
            p.client.delete(p.config.root, prefix=True)

    print(
        f"config reads : cached {result['cached_get_per_s']}/s vs etcd get "
        f"{result['etcd_get_per_s']}/s (x{result['cached_get_ratio']})"
    )
    print(
        f"discover     : cached {result['discover_cached_per_s']}/s vs etcd range "
        f"{result['etcd_range_per_s']}/s (x{result['discover_ratio']})"
    )
    print(f"lock         : p50 {result['lock_p50_ms']} ms, p99 {result['lock_p99_ms']} ms")
    print(f"instance id  : p50 {result['instance_alloc_p50_ms']} ms")
    if reader is not None:  # every acquisition was recorded
        recorded = histogram_count(reader, "im_infra.coord.lock.wait.duration")
        assert recorded == 20 + args.locks, recorded
    # what the metrics add to one lock acquisition: one histogram recording (no-op without SDK)
    calls = 100_000
    t0 = time.perf_counter()
    for _ in range(calls):
        coord_metrics.lock_waited(0.0015, "acquired")
    record_us = (time.perf_counter() - t0) / calls * 1e6
    result["lock_metric_record_us"] = round(record_us, 3)
    lock_p50_us = float(result["lock_p50_ms"]) * 1000  # type: ignore[arg-type]
    print(
        f"metrics      : {record_us:.2f} us per lock acquisition = "
        f"{record_us / lock_p50_us:.2%} of the p50"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
