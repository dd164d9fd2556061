#!/usr/bin/env python3
"""im-infra db benchmark: the provider's API vs raw SQLAlchemy on the same engine.

For PostgreSQL, MariaDB/MySQL and SQLite it measures, in one run:

* select by primary key: ``with provider.session() as s: s.execute(stmt).scalar_one()``
  vs ``with Session(engine) as s: ...`` on ``provider.engine``;
* insert: ``with provider.transaction() as s: s.execute(insert)`` (commit per row)
  vs ``with Session(engine) as s, s.begin(): ...``;
* outbox commit (PostgreSQL, MariaDB): a transaction inserting a row plus ``outbox.add(...)``
  vs one inserting the row plus a plain insert of the same values into a second table of the
  outbox's shape (same columns and indexes): the cost of the outbox's own layer.

Both sides run the same statements on the same engine (same pool, driver and engine events), so
the ratio (provider ops/s ÷ raw ops/s) is the cost of the provider's own layer. The two sides
alternate operation by operation and each operation is timed; throughput is the inverse of the
mean latency without the slowest 10% (scheduler preemption on a busy machine), so load affects
both sides alike. An informational line per backend compares the provider with a bare engine
that has none of im-infra's engine hooks (the slow-query timer; on SQLite also the explicit
BEGIN that makes savepoints work).

Usage:
    eval "$(scripts/devstack env)"; uv run python benchmarks/bench_db.py [--ops 1500] [--otel-sdk]

``--otel-sdk`` installs the OpenTelemetry SDK (in-memory reader) first, so the provider's metrics
are recorded. Both sides share the engine and its statement timer, so the ratio measures the
provider's own layer; the bare-engine line (no im-infra hooks) shows what metrics cost.

Server URLs come from IM_INFRA_PG_URL / IM_INFRA_MYSQL_URL (or --pg-url / --mysql-url).
The last line printed is one JSON object:
{"bench":"db","otel_sdk":…,"pg_select_ratio":…,"pg_insert_ratio":…,"mysql_select_ratio":…,
 "mysql_insert_ratio":…,"sqlite_select_ratio":…,"pg_outbox_commit_ratio":…,
 "mysql_outbox_commit_ratio":…,"outbox_commit_ratio":…}   (the last: the lower of the two)
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, insert, select
from sqlalchemy.orm import Session

from im_infra import clog, db

Op = Callable[[int], None]


def _trimmed_mean(samples: list[float], trim: float) -> float:
    """Mean of the fastest ``1 - trim`` share of ``samples`` (drops scheduler-preemption tails)."""
    ordered = sorted(samples)
    keep = max(1, round(len(ordered) * (1 - trim)))
    return statistics.fmean(ordered[:keep])


def compare(
    provider_op: Op, raw_op: Op, *, ops: int, trim: float = 0.1
) -> tuple[float, float, float]:
    """Interleave single operations of both sides and time each one.

    Returns (provider ops/s, raw ops/s, ratio) from the trimmed mean latencies. Alternating
    op by op (ABBA order) makes both sides see the same machine load, so the ratio stays
    meaningful on a busy shared machine where absolute throughput does not.
    """
    for i in range(max(20, ops // 10)):  # warm-up: pool, compiled-statement cache
        raw_op(i)
        provider_op(i)
    provider_times: list[float] = []
    raw_times: list[float] = []
    clock = time.perf_counter
    gc.collect()
    sides = ((provider_op, provider_times), (raw_op, raw_times))
    for i in range(ops):
        for op, times in sides if i % 2 else sides[::-1]:
            started = clock()
            op(i)
            times.append(clock() - started)
    provider_rate = 1.0 / _trimmed_mean(provider_times, trim)
    raw_rate = 1.0 / _trimmed_mean(raw_times, trim)
    return provider_rate, raw_rate, provider_rate / raw_rate


class Bench:
    """One backend: a provider, its table, and the four operations."""

    def __init__(self, url: str) -> None:
        self.provider = db.new("bench-db", dsn=url, pool_size=4, max_overflow=0)
        self.engine = self.provider.engine
        self.metadata = MetaData()
        self.table = Table(
            f"bench_{uuid.uuid4().hex[:10]}",
            self.metadata,
            Column("id", Integer, primary_key=True, autoincrement=True),
            Column("name", String(40), nullable=False),
        )
        prefix = self.table.name
        self.outbox = db.Outbox(self.provider, table=f"{prefix}_outbox")
        self.outbox_table = db.outbox_table(self.metadata, f"{prefix}_outbox")
        self.plain_events = db.outbox_table(self.metadata, f"{prefix}_plain")
        self.provider.create_all(self.metadata)
        with self.provider.transaction() as s:
            s.execute(insert(self.table), [{"name": f"row-{i}"} for i in range(1000)])

    def commit_outbox(self, i: int) -> None:
        with self.provider.transaction() as s:
            s.execute(insert(self.table).values(name=f"o-{i}"))
            self.outbox.add("chat.stored", key=f"conv-{i % 64}", value=b"payload-%d" % i)

    def commit_plain(self, i: int) -> None:
        with self.provider.transaction() as s:
            s.execute(insert(self.table).values(name=f"q-{i}"))
            s.execute(
                insert(self.plain_events),
                {
                    "topic": "chat.stored",
                    "key": f"conv-{i % 64}",
                    "value": b"payload-%d" % i,
                    "headers": None,
                    "trace_id": clog.trace_id(),
                    "created_at": time.time(),
                },
            )

    def select_provider(self, i: int) -> None:
        with self.provider.session() as s:
            s.execute(select(self.table.c.name).where(self.table.c.id == i % 1000 + 1)).scalar_one()

    def select_raw(self, i: int) -> None:
        with Session(self.engine) as s:
            s.execute(select(self.table.c.name).where(self.table.c.id == i % 1000 + 1)).scalar_one()

    def insert_provider(self, i: int) -> None:
        with self.provider.transaction() as s:
            s.execute(insert(self.table).values(name=f"p-{i}"))

    def insert_raw(self, i: int) -> None:
        with Session(self.engine) as s, s.begin():
            s.execute(insert(self.table).values(name=f"r-{i}"))

    def close(self) -> None:
        self.provider.drop_all(self.metadata)
        self.provider.close()


def bare_select_ratio(bench: Bench, url: str, *, ops: int) -> tuple[float, float, float]:
    """Provider vs a separate plain engine without im-infra's engine events (informational)."""
    bare = create_engine(url, pool_size=4, max_overflow=0, pool_pre_ping=True)
    table = bench.table

    def select_bare(i: int) -> None:
        with Session(bare) as s:
            s.execute(select(table.c.name).where(table.c.id == i % 1000 + 1)).scalar_one()

    try:
        return compare(bench.select_provider, select_bare, ops=ops)
    finally:
        bare.dispose()


def run_backend(
    name: str, url: str, *, ops: int, inserts: bool, bare: bool, outbox: bool = False
) -> dict[str, float]:
    """The ratios of one backend (and the printed details)."""
    bench = Bench(url)
    results: dict[str, float] = {}
    cases: list[tuple[str, Callable[[], tuple[float, float, float]]]] = [
        ("select", lambda: compare(bench.select_provider, bench.select_raw, ops=ops))
    ]
    if inserts:
        cases.append(
            (
                "insert",
                lambda: compare(bench.insert_provider, bench.insert_raw, ops=ops),
            )
        )
    if outbox:
        cases.append(
            ("outbox_commit", lambda: compare(bench.commit_outbox, bench.commit_plain, ops=ops))
        )
    if bare:
        cases.append(("bare", lambda: bare_select_ratio(bench, url, ops=ops)))
    try:
        for kind, run in cases:
            p, r, ratio = run()
            if kind == "bare":
                label = "select vs bare engine (info, no im-infra engine hooks)"
            elif kind == "outbox_commit":
                label = "row + outbox.add vs row + plain insert"
                results[f"{name}_{kind}_ratio"] = round(ratio, 4)
            else:
                label = f"{kind} (provider vs raw Session, same engine)"
                results[f"{name}_{kind}_ratio"] = round(ratio, 4)
            print(
                f"{name:6} {label:56} provider {p:8.0f} ops/s  other {r:8.0f} ops/s  "
                f"ratio {ratio:.3f}",
                flush=True,
            )
    finally:
        bench.close()
    return results


def install_otel_sdk() -> None:
    """Metrics on: the SDK's MeterProvider with an in-memory reader (im-infra's instruments,
    created at import through the API's proxy, start recording into it)."""
    from opentelemetry import metrics
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ops", type=int, default=1500, help="timed operations per side")
    parser.add_argument("--pg-url", default=os.environ.get("IM_INFRA_PG_URL"))
    parser.add_argument("--mysql-url", default=os.environ.get("IM_INFRA_MYSQL_URL"))
    parser.add_argument("--no-bare", action="store_true", help="skip the bare-engine info line")
    parser.add_argument(
        "--otel-sdk",
        action="store_true",
        help="install the OpenTelemetry SDK (in-memory metric reader) first: metrics on",
    )
    args = parser.parse_args(argv)
    if args.otel_sdk:
        install_otel_sdk()
    if not args.pg_url or not args.mysql_url:
        print(
            'set IM_INFRA_PG_URL and IM_INFRA_MYSQL_URL: eval "$(scripts/devstack env)"',
            file=sys.stderr,
        )
        return 2
    clog.init(service="bench-db", level="ERROR")
    bare = not args.no_bare
    result: dict[str, object] = {"bench": "db", "otel_sdk": args.otel_sdk}
    for name, url in (("pg", args.pg_url), ("mysql", args.mysql_url)):
        with clog.trace_context("bench-trace"):  # a request's trace id, stored by outbox.add
            result.update(
                run_backend(name, url, ops=args.ops, inserts=True, bare=bare, outbox=True)
            )
    result["outbox_commit_ratio"] = min(
        float(result["pg_outbox_commit_ratio"]),  # type: ignore[arg-type]
        float(result["mysql_outbox_commit_ratio"]),  # type: ignore[arg-type]
    )
    with tempfile.TemporaryDirectory() as tmp:
        sqlite_url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        result.update(run_backend("sqlite", sqlite_url, ops=args.ops, inserts=False, bare=bare))
    ordered = {
        key: result[key]
        for key in (
            "bench",
            "otel_sdk",
            "pg_select_ratio",
            "pg_insert_ratio",
            "mysql_select_ratio",
            "mysql_insert_ratio",
            "sqlite_select_ratio",
            "pg_outbox_commit_ratio",
            "mysql_outbox_commit_ratio",
            "outbox_commit_ratio",
        )
    }
    print(json.dumps(ordered, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
