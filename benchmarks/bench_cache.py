#!/usr/bin/env python3
"""im_infra.cache vs raw redis-py on the same Redis, in the same run.

Measures get/set ops/s (blocking), get ops/s (asyncio) and pipelined SETs (100 per pipeline,
no MULTI), each through im-infra and through a plain redis-py client configured the same way
(one connection in use, str replies, the connection options im-infra gives redis-py: see
:func:`raw_options`). Rounds alternate between the two so machine noise hits both alike; the
figure per case is the median over rounds.

    eval "$(scripts/devstack env)"; uv run python benchmarks/bench_cache.py [--url URL] [--rounds N]
        [--otel-sdk]

``--otel-sdk`` installs the OpenTelemetry SDK (in-memory reader) first, so im-infra's metrics are
recorded: compare the ratios with and without it for the cost of metrics. redis-py has none.

Hot-path features, same run: ``stampede_loader_calls`` (loader calls for 1,000 concurrent misses
of one key through cache-aside, as threads and as asyncio tasks: the larger of the two),
``hot_get_client_cache_ratio_vs_redis_py`` (100k GETs of one hot key with client-side caching on,
against plain redis-py GETs) and ``ratelimit_ratio_vs_raw_evalsha`` (a token-bucket limiter call
against the same Lua script run by raw redis-py ``evalsha``); each ratio as the median over
rounds, and ``*_best`` as the ratio of each side's best round.

Last line: one JSON object {"bench":"cache","otel_sdk":…,"set_ratio_vs_redis_py":…,
"get_ratio_vs_redis_py":…,"async_get_ratio_vs_redis_py":…,"pipeline_ratio_vs_redis_py":…,
"stampede_loader_calls":…,"hot_get_client_cache_ratio_vs_redis_py":…,
"ratelimit_ratio_vs_raw_evalsha":…, …} (ratio = im-infra / redis-py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import redis
import redis.asyncio

from im_infra import cache
from im_infra.cache import ratelimit

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


def stampede(address: str, db: int) -> dict[str, int]:
    """Loader calls for 1,000 concurrent misses of one key: threads, then asyncio tasks."""
    calls = {"threads": 0, "tasks": 0}
    lock = threading.Lock()
    c = cache.new(SERVICE, address=address, db=db)
    c.delete("stampede")

    def loader() -> str:
        with lock:
            calls["threads"] += 1
        time.sleep(0.2)
        return "value"

    aside = c.aside(ttl=60)
    start = threading.Barrier(1000)

    def worker() -> None:
        start.wait()
        aside.get("stampede", loader)

    threads = [threading.Thread(target=worker) for _ in range(1000)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    c.delete("stampede")
    c.close()

    async def tasks() -> None:
        ac = cache.new_async(SERVICE, address=address, db=db)

        async def aloader() -> str:
            calls["tasks"] += 1
            await asyncio.sleep(0.2)
            return "value"

        a = ac.aside(ttl=60)
        await asyncio.gather(*(a.get("stampede", aloader) for _ in range(1000)))
        await ac.delete("stampede")
        await ac.close()

    asyncio.run(tasks())
    return calls


def raw_options(ours: Any) -> dict[str, Any]:
    """The raw redis-py client's options: those im-infra's cache ``ours`` gives redis-py for its
    connections, so both sides do the same work. RESP2 (redis-py 8 speaks RESP3 unless told) and
    the same socket timeouts (redis.asyncio arms a timer for every read when one is set)."""
    cfg = ours.config
    return {
        "decode_responses": True,
        "protocol": 2,
        "socket_timeout": cfg.read_timeout,
        "socket_connect_timeout": cfg.connect_timeout,
    }


def hot_get(address: str, db: int, host: str, port: int, ops: int, rounds: int) -> dict[str, Any]:
    """GETs of one hot key: im-infra with client-side caching vs plain redis-py (ops/s)."""
    ours = cache.new(SERVICE, address=address, db=db, local_cache={"prefixes": ["hot:"]})
    raw = redis.Redis(host=host, port=port, db=db, **raw_options(ours))
    ours.set("hot:1", VALUE)
    ours.get("hot:1")
    deadline = time.monotonic() + 5
    while ours.local_cache is None or not ours.local_cache.enabled:
        if time.monotonic() > deadline:
            raise SystemExit("client-side cache tracking did not come up")
        time.sleep(0.01)
    ours.get("hot:1")
    g, rg, key = ours.get, raw.get, SERVICE + ":hot:1"
    rates: dict[str, list[float]] = {"ours": [], "raw": []}
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(ops):
            g("hot:1")
        rates["ours"].append(ops / (time.perf_counter() - start))
        start = time.perf_counter()
        for _ in range(ops // 10):  # the raw side is ~30x slower: a tenth of the calls
            rg(key)
        rates["raw"].append(ops // 10 / (time.perf_counter() - start))
    assert ours.local_cache is not None
    hits = ours.local_cache.hits
    ours.delete("hot:1")
    ours.close()
    raw.close()
    return {**rates, "hits": hits}


SIDES = ("get", "set", "aget", "raw_get", "raw_set", "raw_aget")


def only_side(side: str, n: int, address: str, db: int, host: str, port: int) -> None:
    """``--calls SIDE``: ``n`` commands of one side and nothing else, for instruction counts,
    which a shared machine's load does not move (the wall-clock ratios do). A side's cost per
    command is the difference of two runs (``--ops N`` and ``--ops 0``: the same start-up, both
    clients created and used once whichever side runs)::

        for n in 0 2000; do PYTHONHASHSEED=0 valgrind --tool=callgrind \\
            --callgrind-out-file=/dev/null .venv/bin/python benchmarks/bench_cache.py \\
            --calls get --ops $n 2>&1 | grep Collected; done   # then --calls raw_get

    Sides: ``get``, ``set``, ``aget`` (im-infra, blocking and asyncio) and ``raw_get``,
    ``raw_set``, ``raw_aget`` (redis-py with :func:`raw_options`).
    """
    keys = [f"k{i}" for i in range(KEYS)]
    full = [f"{SERVICE}:{k}" for k in keys]
    if side.endswith("aget"):

        async def run() -> None:
            ours = cache.new_async(SERVICE, address=address, db=db)
            raw = redis.asyncio.Redis(host=host, port=port, db=db, **raw_options(ours))
            await ours.set(keys[0], VALUE)
            await ours.get(keys[0])
            await raw.get(full[0])
            get = ours.get if side == "aget" else raw.get
            names = keys if side == "aget" else full
            for i in range(n):
                await get(names[i % KEYS])
            await ours.close()
            await raw.aclose()

        asyncio.run(run())
        return
    ours = cache.new(SERVICE, address=address, db=db)
    raw = redis.Redis(host=host, port=port, db=db, **raw_options(ours))
    ours.set(keys[0], VALUE)
    ours.get(keys[0])
    raw.get(full[0])
    names = full if side.startswith("raw_") else keys
    client = raw if side.startswith("raw_") else ours
    if side.endswith("set"):
        put = client.set
        for i in range(n):
            put(names[i % KEYS], VALUE)
    else:
        get = client.get
        for i in range(n):
            get(names[i % KEYS])
    ours.close()
    raw.close()


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
    parser.add_argument(
        "--calls",
        choices=SIDES,
        help="only run --ops commands of this side and exit (for instruction counts)",
    )
    args = parser.parse_args()
    if args.otel_sdk:
        install_otel_sdk()

    parts = urlsplit(args.url)
    address = f"{parts.hostname}:{parts.port or 6379}"
    db = int(parts.path.strip("/") or 0)
    if args.calls:
        only_side(
            args.calls, args.ops, address, db, parts.hostname or "127.0.0.1", parts.port or 6379
        )
        return
    prefix = f"{SERVICE}:"
    keys = [f"k{i}" for i in range(KEYS)]
    full = [prefix + k for k in keys]

    ours = cache.new(SERVICE, address=address, db=db)
    raw = redis.Redis(host=parts.hostname, port=parts.port or 6379, db=db, **raw_options(ours))

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
        host=parts.hostname, port=parts.port or 6379, db=db, **raw_options(aours)
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

    # rate limiter vs the same script through raw redis-py EVALSHA (token bucket, all allowed)
    spec = cache.TokenBucket(rate=1_000_000, burst=1_000_000)
    limiter = ours.limiter("bench", spec)
    raw_key = f"{prefix}ratelimit:raw:u"
    sha = raw.script_load(ratelimit.TOKEN_BUCKET_LUA)

    def ours_limit(n: int) -> None:
        allow = limiter.allow
        for _ in range(n):
            allow("u")

    def raw_limit(n: int) -> None:
        ev = raw.evalsha
        for _ in range(n):
            ev(sha, 1, raw_key, spec.rate, spec.burst, 1)

    ours_limit(args.ops // 10)
    raw_limit(args.ops // 10)
    results["ratelimit"] = interleaved(ours_limit, raw_limit, args.ops, args.rounds)
    ours.delete("ratelimit:bench:u", "ratelimit:raw:u")

    ours.delete(*keys)
    ours.close()
    raw.close()

    calls = stampede(address, db)
    hot_ops = max(1000, args.ops * 100 // 3)  # 100k with the default --ops
    hot = hot_get(
        address, db, parts.hostname or "127.0.0.1", parts.port or 6379, hot_ops, args.rounds
    )

    summary: dict[str, Any] = {"bench": "cache", "otel_sdk": args.otel_sdk}
    for name in ("set", "get", "async_get", "pipeline", "ratelimit"):
        per = results[name]
        ours_rate, raw_rate = statistics.median(per["ours"]), statistics.median(per["raw"])
        ratio = statistics.median(per["ratio"])
        print(
            f"{name:10s} im-infra {ours_rate:9.0f} ops/s   redis-py {raw_rate:9.0f} ops/s"
            f"   ratio {ratio:.3f}"
        )
        label = (
            "ratelimit_ratio_vs_raw_evalsha" if name == "ratelimit" else f"{name}_ratio_vs_redis_py"
        )
        summary[label] = round(ratio, 3)
        summary[f"{label}_best"] = round(max(per["ours"]) / max(per["raw"]), 3)
    print(f"stampede   loader calls: threads {calls['threads']}, tasks {calls['tasks']}")
    hot_median = statistics.median(hot["ours"]) / statistics.median(hot["raw"])
    hot_best = max(hot["ours"]) / max(hot["raw"])
    print(
        f"hot get    im-infra+local {statistics.median(hot['ours']):9.0f} ops/s   redis-py "
        f"{statistics.median(hot['raw']):9.0f} ops/s   ratio {hot_median:.1f} (local hits "
        f"{hot['hits']})"
    )
    summary["stampede_loader_calls"] = max(calls.values())
    summary["stampede_loader_calls_threads"] = calls["threads"]
    summary["stampede_loader_calls_tasks"] = calls["tasks"]
    summary["hot_get_client_cache_ratio_vs_redis_py"] = round(hot_median, 1)
    summary["hot_get_client_cache_ratio_vs_redis_py_best"] = round(hot_best, 1)
    print(json.dumps(summary, separators=(",", ":")))


if __name__ == "__main__":
    main()
