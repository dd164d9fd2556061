#!/usr/bin/env python3
"""im_infra.coord.rpc: unary calls through the registry's balanced channel vs a plain channel.

One gRPC echo server runs in a child process and is registered in etcd under a fresh service
name. In the same run, rounds alternate between
- plain: ``grpc.insecure_channel(address).unary_unary(...)`` (the raw library, one address);
- balanced: ``rpc.channel(registry, service).unary_unary(...)`` (pick, in-flight counting,
  trace metadata, retry bookkeeping) to that same single instance, so the ratio is the
  channel's own overhead;
and the same for asyncio (``grpc.aio.insecure_channel`` vs ``rpc.aio_channel``), calls awaited
one after another. The two sides alternate every 100 calls within a round (so both see the same
machine load). The balanced side records ``rpc.client.call.duration`` per call: a no-op through
the OpenTelemetry API alone, a real recording with ``--otel-sdk`` (the SDK installed with an
in-memory reader first, as an application exporting metrics would).

    eval "$(scripts/devstack env)"
    uv run python benchmarks/bench_grpc.py [--endpoints E] [--calls 3000] [--rounds 7] [--otel-sdk]

Last line: one JSON object {"bench":"grpc","otel_sdk":…,"call_ratio_vs_plain_channel":…
(median of the per-round ratios),"call_ratio_vs_plain_channel_best":… (best round over best round),
"plain_calls_per_s":…,"balanced_calls_per_s":… (best rounds; "_median" too), and the same with
"aio_" in front; with --otel-sdk "recorded_calls" too}.
Target: call_ratio_vs_plain_channel >= 0.9.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent import futures
from typing import Any

import grpc
import grpc.aio

from im_infra import coord
from im_infra.coord import rpc

METHOD = "/bench.Echo/Echo"
PAYLOAD = b"x" * 64


def serve() -> None:
    """The child: an echo server on a free port; prints it, runs until stdin closes."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    echo: grpc.RpcMethodHandler[bytes, bytes] = grpc.unary_unary_rpc_method_handler(
        lambda request, _context: request
    )
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("bench.Echo", {"Echo": echo})]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    sys.stdin.read()
    server.stop(0)


BATCH = 100  # the sides alternate every BATCH calls, so both see the same machine load


def timed(fn: Callable[[bytes], Any], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn(PAYLOAD)
    return time.perf_counter() - start


async def timed_async(fn: Callable[[bytes], Awaitable[Any]], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        await fn(PAYLOAD)
    return time.perf_counter() - start


def one_round(
    plain: Callable[[bytes], Any], balanced: Callable[[bytes], Any], calls: int
) -> tuple[float, float]:
    """Calls per second of each side over ``calls`` calls, interleaved in batches."""
    spent = [0.0, 0.0]
    for b in range(max(1, calls // BATCH)):
        sides = [(0, plain), (1, balanced)]
        for i, fn in sides if b % 2 == 0 else sides[::-1]:
            spent[i] += timed(fn, BATCH)
    n = max(1, calls // BATCH) * BATCH
    return n / spent[0], n / spent[1]


async def one_round_async(
    plain: Callable[[bytes], Awaitable[Any]],
    balanced: Callable[[bytes], Awaitable[Any]],
    calls: int,
) -> tuple[float, float]:
    spent = [0.0, 0.0]
    for b in range(max(1, calls // BATCH)):
        sides = [(0, plain), (1, balanced)]
        for i, fn in sides if b % 2 == 0 else sides[::-1]:
            spent[i] += await timed_async(fn, BATCH)
    n = max(1, calls // BATCH) * BATCH
    return n / spent[0], n / spent[1]


def summary(prefix: str, plain: list[float], balanced: list[float]) -> dict[str, float]:
    """The headline ratio is the median of the per-round ratios (each round pairs the two
    sides under the same load); the ratio of the best rounds is given beside it."""
    paired = [b / p for p, b in zip(plain, balanced, strict=True)]
    return {
        f"{prefix}call_ratio_vs_plain_channel": round(statistics.median(paired), 3),
        f"{prefix}call_ratio_vs_plain_channel_best": round(max(balanced) / max(plain), 3),
        f"{prefix}plain_calls_per_s": round(max(plain)),
        f"{prefix}balanced_calls_per_s": round(max(balanced)),
        f"{prefix}plain_calls_per_s_median": round(statistics.median(plain)),
        f"{prefix}balanced_calls_per_s_median": round(statistics.median(balanced)),
    }


def bench_sync(
    registry: coord.ServiceRegistry, service: str, address: str, args: Any
) -> dict[str, float]:
    plain_ch = grpc.insecure_channel(address)
    balanced_ch = rpc.channel(registry, service)
    plain: grpc.UnaryUnaryMultiCallable[bytes, bytes] = plain_ch.unary_unary(METHOD)
    balanced: grpc.UnaryUnaryMultiCallable[bytes, bytes] = balanced_ch.unary_unary(METHOD)
    one_round(plain, balanced, 300)  # connect and warm up both
    plain_rates: list[float] = []
    balanced_rates: list[float] = []
    for _ in range(args.rounds):
        p, b = one_round(plain, balanced, args.calls)
        plain_rates.append(p)
        balanced_rates.append(b)
    plain_ch.close()
    balanced_ch.close()
    return summary("", plain_rates, balanced_rates)


async def bench_aio(
    registry: coord.ServiceRegistry, service: str, address: str, args: Any
) -> dict[str, float]:
    plain_ch = grpc.aio.insecure_channel(address)
    balanced_ch = rpc.aio_channel(registry, service)
    plain: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = plain_ch.unary_unary(METHOD)
    balanced: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = balanced_ch.unary_unary(METHOD)
    await one_round_async(plain, balanced, 300)
    plain_rates: list[float] = []
    balanced_rates: list[float] = []
    for _ in range(args.rounds):
        p, b = await one_round_async(plain, balanced, args.calls)
        plain_rates.append(p)
        balanced_rates.append(b)
    await plain_ch.close()
    await balanced_ch.close()
    return summary("aio_", plain_rates, balanced_rates)


def install_sdk() -> Any:
    """Install the OpenTelemetry SDK with an in-memory reader; returns the reader."""
    from opentelemetry import metrics
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    return reader


def recorded_calls(reader: Any) -> int:
    """How many calls ``rpc.client.call.duration`` holds (the recordings did happen)."""
    data = reader.get_metrics_data()
    return sum(
        point.count
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == "rpc.client.call.duration"
        for point in m.data.data_points
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--endpoints", default=os.environ.get("IM_INFRA_ETCD_ENDPOINTS"))
    parser.add_argument("--calls", type=int, default=3000, help="calls per round and side")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument(
        "--otel-sdk", action="store_true", help="install the OpenTelemetry SDK (metrics on)"
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve()
        return
    reader = install_sdk() if args.otel_sdk else None
    if not args.endpoints:
        parser.error("no etcd: pass --endpoints or set IM_INFRA_ETCD_ENDPOINTS")
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stdin is not None
    address = f"127.0.0.1:{child.stdout.readline().strip()}"
    service = f"bench-grpc-{uuid.uuid4().hex[:8]}"
    try:
        with coord.connect(args.endpoints, timeout=3) as provider:
            provider.registry.register(coord.ServiceInstance(service, "only", address), ttl=10)
            result: dict[str, Any] = {"bench": "grpc", "otel_sdk": bool(args.otel_sdk)}
            result.update(calls=args.calls, rounds=args.rounds)
            result.update(bench_sync(provider.registry, service, address, args))
            result.update(asyncio.run(bench_aio(provider.registry, service, address, args)))
            if reader is not None:
                result["recorded_calls"] = recorded_calls(reader)
    finally:
        child.stdin.close()
        child.wait(10)
    for key, value in result.items():
        print(f"{key:45} {value}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
