"""clog lines/s against raw loguru (serialize=True), stdlib logging + a JSON formatter, structlog.

Every contender writes one JSON line per call, with a trace id, ``user`` and ``n`` fields, to its
own temporary file (flushed per line, as a log sink must be), in the same run.

    uv run python benchmarks/bench_clog.py [--lines 100000] [--repeat 3] [--otel-sdk]

clog looks up the active OpenTelemetry span on every line (its trace id is used when no clog
id is bound). The bench reports that lookup's own cost (``span_lookup_ns``, no context attached,
the common case) and, with ``--otel-sdk`` (the SDK's TracerProvider and MeterProvider installed),
a ``clog_in_span`` contender writing inside an active span with no clog id bound, plus the
lookup's cost in a span (``span_lookup_in_span_ns``).

The last line printed is one JSON object (the figures CI and the closing notes quote).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, TextIO

import structlog
from loguru import logger as loguru_logger

from im_infra import clog

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def bench_clog(
    out: TextIO,
    n: int,
    passthrough: bool = False,
    scope: AbstractContextManager[Any] | None = None,
) -> float:
    """clog lines with a bound trace id, or inside ``scope`` (e.g. an OpenTelemetry span)."""
    clog.init(service="bench", sink=out, intercept_stdlib=False, loguru_passthrough=passthrough)
    log = clog.get_logger("bench")
    with scope if scope is not None else clog.trace_context(TRACE):
        t0 = time.perf_counter()
        for i in range(n):
            log.info("message stored", user="alice", n=i)
        dt = time.perf_counter() - t0
    clog.shutdown()
    return dt


def bench_clog_in_span(out: TextIO, n: int) -> float:
    """clog inside an active OpenTelemetry span, no clog id bound: trace/span ids from the span."""
    from opentelemetry import trace

    return bench_clog(out, n, scope=trace.get_tracer("bench").start_as_current_span("bench"))


def install_otel_sdk() -> None:
    """The SDK's TracerProvider (spans are recorded and dropped) and an in-memory MeterProvider."""
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider

    trace.set_tracer_provider(TracerProvider())
    metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))


def lookup_ns(calls: int = 200_000) -> float:
    """Nanoseconds per active-span lookup (the per-line cost the OpenTelemetry link adds)."""
    from im_infra.clog._internal.otel import active_span_ids

    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(calls):
            active_span_ids()
        best = min(best, (time.perf_counter() - t0) / calls * 1e9)
    return best


def bench_clog_passthrough(out: TextIO, n: int) -> float:
    return bench_clog(out, n, passthrough=True)


def bench_loguru(out: TextIO, n: int) -> float:
    loguru_logger.remove()
    hid = loguru_logger.add(out, serialize=True, level="INFO")
    log = loguru_logger.bind(service="bench", trace_id=TRACE)
    t0 = time.perf_counter()
    for i in range(n):
        log.info("message stored", user="alice", n=i)
    dt = time.perf_counter() - t0
    loguru_logger.remove(hid)
    return dt


class JsonFormatter(logging.Formatter):
    """A typical hand-written stdlib JSON formatter."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": self.formatTime(record),
            "level": record.levelname.lower(),
            "service": "bench",
            "msg": record.getMessage(),
            "trace_id": getattr(record, "trace_id", None),
            "user": getattr(record, "user", None),
            "n": getattr(record, "n", None),
        }
        return json.dumps(doc)


def bench_stdlib(out: TextIO, n: int) -> float:
    lg = logging.getLogger("bench.stdlib")
    lg.propagate = False
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    lg.addHandler(handler)
    lg.setLevel(logging.INFO)
    t0 = time.perf_counter()
    for i in range(n):
        lg.info("message stored", extra={"trace_id": TRACE, "user": "alice", "n": i})
    dt = time.perf_counter() - t0
    lg.removeHandler(handler)
    return dt


def bench_structlog(out: TextIO, n: int) -> float:
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.WriteLoggerFactory(file=out),
        cache_logger_on_first_use=True,
    )
    log = structlog.get_logger().bind(service="bench")
    structlog.contextvars.bind_contextvars(trace_id=TRACE)
    t0 = time.perf_counter()
    for i in range(n):
        log.info("message stored", user="alice", n=i)
    dt = time.perf_counter() - t0
    structlog.contextvars.clear_contextvars()
    return dt


def measure(fn: Callable[[TextIO, int], float], n: int, repeat: int) -> tuple[float, int]:
    """Best lines/s over ``repeat`` runs, and the line count of the last file (a sanity check)."""
    best = 0.0
    lines = 0
    for _ in range(repeat):
        fd, path = tempfile.mkstemp(suffix=".log")
        os.close(fd)
        try:
            with open(path, "w", encoding="utf-8") as out:
                dt = fn(out, n)
            with open(path, encoding="utf-8") as f:
                lines = sum(1 for _ in f)
        finally:
            os.unlink(path)
        best = max(best, n / dt)
    return best, lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--lines", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--otel-sdk", action="store_true", help="install the OpenTelemetry SDK")
    args = ap.parse_args()
    if args.otel_sdk:
        install_otel_sdk()
    results: dict[str, float] = {}
    contenders: list[tuple[str, Callable[[TextIO, int], float]]] = [("clog", bench_clog)]
    if args.otel_sdk:
        contenders.append(("clog_in_span", bench_clog_in_span))
    for name, fn in (
        *contenders,
        ("clog_passthrough", bench_clog_passthrough),
        ("loguru_serialize", bench_loguru),
        ("stdlib_json", bench_stdlib),
        ("structlog", bench_structlog),
    ):
        rate, lines = measure(fn, args.lines, args.repeat)
        if lines != args.lines:
            print(f"{name}: wrote {lines} lines, expected {args.lines}", file=sys.stderr)
            return 1
        results[name] = rate
    print(f"{'logger':<18}{'lines/s':>14}{'vs clog':>10}")
    for name, rate in results.items():
        print(f"{name:<18}{rate:>14,.0f}{rate / results['clog']:>10.2f}")
    summary: dict[str, Any] = {
        "bench": "clog",
        "clog_lines_per_s": round(results["clog"]),
        "clog_passthrough_lines_per_s": round(results["clog_passthrough"]),
        "loguru_serialize_lines_per_s": round(results["loguru_serialize"]),
        "stdlib_json_lines_per_s": round(results["stdlib_json"]),
        "structlog_lines_per_s": round(results["structlog"]),
        "ratio_vs_loguru": round(results["clog"] / results["loguru_serialize"], 2),
        "ratio_vs_stdlib": round(results["clog"] / results["stdlib_json"], 2),
        "otel_sdk": args.otel_sdk,
        "span_lookup_ns": round(lookup_ns()),
    }
    if args.otel_sdk:
        from opentelemetry import trace

        summary["clog_in_span_lines_per_s"] = round(results["clog_in_span"])
        with trace.get_tracer("bench").start_as_current_span("lookup"):
            summary["span_lookup_in_span_ns"] = round(lookup_ns())
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
