#!/usr/bin/env python3
"""im_infra.coord on the local etcd: cached reads vs direct etcd reads, locks, instance IDs.

Measured in one run against the same etcd:
- config: ``LiveConfig.value`` (kept current by a watch) vs a direct etcd get of the document
  (``ConfigManager.get``), reads per second and their ratio;
- discovery: ``registry.discover()`` (watch-fed cache) vs a direct etcd range of the service's
  prefix (``client.range``), reads per second and their ratio;
- lock: acquire + release of an uncontended lock, p50/p99 in ms;
- instance IDs: ``get_instance_id()`` allocation (fresh allocator each time), p50 in ms.

    eval "$(scripts/devstack env)"; uv run python benchmarks/bench_coord.py [--endpoints E]

Last line: one JSON object {"bench":"coord","cached_get_per_s":…,"etcd_get_per_s":…,
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

from pydantic import BaseModel, ConfigDict, Field

from im_infra import clog, coord
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoints", default=os.environ.get("IM_INFRA_ETCD_ENDPOINTS"))
    parser.add_argument("--seconds", type=float, default=2.0, help="per read-rate measurement")
    parser.add_argument("--locks", type=int, default=500, help="lock acquire+release samples")
    parser.add_argument("--allocs", type=int, default=200, help="instance-id allocations")
    args = parser.parse_args()
    if not args.endpoints:
        parser.error('no endpoints: pass --endpoints or eval "$(scripts/devstack env)"')
    clog.init(service="bench-coord", level="WARNING")
    tag = f"bench{uuid.uuid4().hex[:8]}"
    result: dict[str, object] = {"bench": "coord"}

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
                inst.get_instance_id()
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
    print(json.dumps(result))


if __name__ == "__main__":
    main()
