"""im-infra-demo: run GoChat's message pipeline end to end and report on it.

  im-infra-demo                  1000 messages: gateway -> Kafka -> worker -> DB + Redis
  im-infra-demo --messages 200 --kill-worker-after 80
                                 SIGKILL the worker mid-run; a new one takes over
  im-infra-demo gateway --port 8080
                                 the HTTP gateway alone
  im-infra-demo worker           a logic worker alone

Backends: the IM_INFRA_ETCD_ENDPOINTS, IM_INFRA_KAFKA_BROKERS and IM_INFRA_REDIS_URL variables
when set, else scripts/devstack up --demo starts etcd, the broker and Redis (they stay up
afterwards; scripts/devstack down stops them). The database is an embedded SQLite file in the
run directory unless --db-url names PostgreSQL or MariaDB.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from im_infra import cache, clog, coord, db, mq
from im_infra_demo import stack
from im_infra_demo.gateway import Gateway, serve
from im_infra_demo.history import recent_messages
from im_infra_demo.schema import CACHE_KEEP, TOPIC, Base, StoredMessage, cache_key, tune_sqlite
from im_infra_demo.soak_report import percentile
from im_infra_demo.telemetry import scrape, serve_metrics
from im_infra_demo.worker import GROUP

ENV = "demo"


def put_config(provider: coord.Provider, db_url: str, redis_url: str) -> None:
    """Upload the documents the components read, as an operator would with
    ``im-infra-coord config put``."""
    brokers = os.environ["IM_INFRA_KAFKA_BROKERS"].split(",")
    docs: dict[str, dict[str, Any]] = {
        "global/kafka.yaml": {
            "common": {"brokers": brokers, "clientIDPrefix": "gochat"},
            "consumer": {
                "autoOffsetReset": "earliest",
                "autoCommitIntervalMs": 1000,
                "sessionTimeoutMs": 6000,
                "heartbeatIntervalMs": 1500,
            },
        },
        "global/redis.yaml": {"address": redis_url},
        "im-logic/db.yaml": {"dsn": db_url},
        # the logic worker handles up to 8 messages at once, in order per conversation (the
        # message key): its Redis and database round trips overlap instead of queueing
        "im-logic/kafka.yaml": {"consumer": {"concurrency": 8}},
    }
    for key, doc in docs.items():
        provider.config.set(key, doc)


class WorkerProcess:
    """A logic worker subprocess with its stdout (clog JSON) in a log file."""

    def __init__(self, run_dir: Path, n: int, topic: str, group: str) -> None:
        self.metrics_port = _free_port()
        # Every process runs as "worker-1": a restarted worker replaces the killed one.
        self.log_path = run_dir / f"worker-{n}.log"
        with self.log_path.open("wb") as out:
            cmd = [sys.executable, "-m", "im_infra_demo.worker", "--name", "worker-1"]
            self.proc = subprocess.Popen(
                [
                    *cmd,
                    "--topic",
                    topic,
                    "--group",
                    group,
                    "--metrics-port",
                    str(self.metrics_port),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _process(
    name: str, role: str, pid: int, log: Path, metrics_port: int, figures: list[Any]
) -> dict[str, Any]:
    """One process of the run, as the report shows it."""
    return {
        "name": name,
        "role": role,
        "pid": pid,
        "log": str(log),
        "metrics_url": f"http://127.0.0.1:{metrics_port}/metrics",
        "metrics": {f.name: f.text for f in figures},
    }


def run_demo(args: argparse.Namespace, backends: stack.Backends) -> dict[str, Any]:
    os.environ["IM_INFRA_ENV"] = ENV
    run_id = uuid.uuid4().hex[:12]
    run_dir = Path(args.run_dir or tempfile.mkdtemp(prefix=f"gochat-{run_id}-"))
    run_dir.mkdir(parents=True, exist_ok=True)
    db_url = args.db_url or f"sqlite:///{run_dir / 'chat.db'}"
    gateway_log = run_dir / "gateway.log"
    with gateway_log.open("w") as log_out:
        clog.init(service="im-gateway", sink=log_out)
        args.gateway_metrics_port = serve_metrics(args.metrics_port)
        return _run(args, backends, run_id, run_dir, db_url, gateway_log)


def _run(
    args: argparse.Namespace,
    backends: stack.Backends,
    run_id: str,
    run_dir: Path,
    db_url: str,
    gateway_log: Path,
) -> dict[str, Any]:
    with coord.connect(service="im-gateway") as provider:
        put_config(provider, db_url, backends.redis)
        with mq.new_admin_client("im-gateway", coord=provider) as admin:
            admin.create_topic(args.topic, partitions=4, replication_factor=1)
            # the worker's "message stored" events (written through the db outbox)
            admin.create_topic(f"{args.topic}.stored", partitions=4, replication_factor=1)
        store = db.new("im-demo-report", dsn=db_url)
        tune_sqlite(store.engine)
        store.create_all(Base.metadata)
        workers = [WorkerProcess(run_dir, 1, args.topic, args.group)]
        deadline = time.monotonic() + 60
        while not provider.registry.discover("im-logic"):
            if time.monotonic() > deadline or workers[0].proc.poll() is not None:
                raise RuntimeError(f"worker did not register; see {workers[0].log_path}")
            time.sleep(0.1)

        def stored() -> int:
            with store.session() as s:
                q = select(func.count()).select_from(StoredMessage)
                return int(s.scalar(q.where(StoredMessage.run_id == run_id)) or 0)

        # Warm up: one message through the whole path, so the worker has joined the group and
        # been assigned partitions before the timed messages go out.
        # (through the run's own gateway, whose producer is then connected as well)
        gateway = Gateway(provider, run_id, args.topic)
        chat = gateway.accept("warmup", "demo", "warm-up", run_id=f"warm-{run_id}")
        while True:
            with store.session() as s:  # a fresh snapshot each time
                if s.get(StoredMessage, chat.msg_id) is not None:
                    break
            if time.monotonic() > deadline + args.timeout:
                raise RuntimeError(f"warm-up message not stored; see {workers[0].log_path}")
            time.sleep(0.05)

        gateway.producer.flush()
        gateway.acked = gateway.failed = 0  # count the run's messages only
        conversations = [f"{run_id}-c{i:03d}" for i in range(args.conversations)]
        killed = False

        def kill_and_restart_when_due(count: int) -> None:
            """--kill-worker-after: SIGKILL the worker once ``count`` reaches N, start another."""
            nonlocal killed
            if args.kill_worker_after and not killed and count >= args.kill_worker_after:
                workers[-1].kill()
                killed = True
                workers.append(WorkerProcess(run_dir, len(workers) + 1, args.topic, args.group))

        t0 = time.monotonic()
        try:
            for i in range(args.messages):
                if args.rate > 0:
                    ahead = t0 + i / args.rate - time.monotonic()
                    if ahead > 0:
                        time.sleep(ahead)
                conv = conversations[i % len(conversations)]
                with clog.trace_context():
                    gateway.accept(conv, f"user{i % 7}", f"hello #{i} in {conv}")
                if args.kill_worker_after and not killed:  # no count query once done
                    kill_and_restart_when_due(stored())
            gateway.producer.flush()
            sent_s = time.monotonic() - t0
            deadline = time.monotonic() + args.timeout
            while (count := stored()) < args.messages and time.monotonic() < deadline:
                kill_and_restart_when_due(count)
                time.sleep(0.05)
            # what the processes' Prometheus endpoints say, before the worker stops
            scraped = {
                "gateway": scrape(args.gateway_metrics_port),
                **{
                    f"worker-{n}": scrape(w.metrics_port)
                    for n, w in enumerate(workers, 1)
                    if w.proc.poll() is None
                },
            }
        finally:
            gateway.close()
            exit_codes = [w.stop() for w in workers if w.proc.poll() is None]
        processes = [
            _process(
                "gateway",
                "this process: accepts the messages, publishes them to Kafka",
                os.getpid(),
                gateway_log,
                args.gateway_metrics_port,
                scraped.get("gateway", []),
            )
        ]
        for n, w in enumerate(workers, 1):
            code = w.proc.returncode
            how = "SIGKILLed mid-run" if code == -signal.SIGKILL else f"stopped, exit code {code}"
            processes.append(
                _process(
                    f"worker-{n}",
                    f"logic worker: consumes, stores, caches; {how}",
                    w.proc.pid,
                    w.log_path,
                    w.metrics_port,
                    scraped.get(f"worker-{n}", []),
                )
            )
        total_s = time.monotonic() - t0
        with store.session() as s:
            rows = s.execute(
                select(StoredMessage.sent_at, StoredMessage.stored_at, StoredMessage.trace_id)
                .where(StoredMessage.run_id == run_id)
                .order_by(StoredMessage.msg_id)
            ).all()
        with cache.new("im-logic", coord=provider) as c:
            cached = sum(min(c.zcard(cache_key(conv)), 50) for conv in conversations)
            recent = recent_messages(c, store, conversations[0])  # read through cache-aside
        store.close()
        latencies = sorted((r.stored_at - r.sent_at) * 1000 for r in rows)
        sample = rows[len(rows) // 2].trace_id if rows else ""
        logs = [gateway_log, *(w.log_path for w in workers)]
        trace_lines = [
            line.rstrip("\n")
            for path in logs
            for line in path.read_text(errors="replace").splitlines()
            if sample and sample in line
        ]
        per_conv = [
            args.messages // len(conversations)
            + (1 if i < args.messages % len(conversations) else 0)
            for i in range(len(conversations))
        ]
        return {
            "run_id": run_id,
            "run_dir": str(run_dir),
            "sent": args.messages,
            "acked": gateway.acked,
            "publish_failed": gateway.failed,
            "stored": len(rows),
            "cached": cached,
            "cached_expected": sum(min(50, n) for n in per_conv),
            "recent_page": len(recent),
            "recent_page_expected": min(CACHE_KEEP, per_conv[0]),
            "worker_killed": killed,
            "workers_started": len(workers),
            "worker_exit_codes": exit_codes,
            "rate_per_s": args.rate,
            "send_seconds": round(sent_s, 3),
            "total_seconds": round(total_s, 3),
            "e2e_p50_ms": round(percentile(latencies, 50), 2),
            "e2e_p99_ms": round(percentile(latencies, 99), 2),
            "warmup_messages": 1,
            "processes": processes,
            "sample_trace_id": sample,
            "sample_trace_lines": trace_lines,
        }


def print_report(rep: dict[str, Any], backends: stack.Backends) -> None:
    ok = rep["stored"] == rep["sent"] and rep["cached"] == rep["cached_expected"]
    print(f"GoChat pipeline on im-infra — run {rep['run_id']} ({'OK' if ok else 'INCOMPLETE'})")
    acked = f"acked by Kafka: {rep['acked']}, failed: {rep['publish_failed']}"
    print(f"  sent      {rep['sent']:>7}   ({acked})")
    print(f"  stored    {rep['stored']:>7}   (exactly once: one row per message id)")
    expected = f"last 50 per conversation; expected {rep['cached_expected']}"
    print(f"  cached    {rep['cached']:>7}   ({expected})")
    page = f"first conversation, via cache-aside; expected {rep['recent_page_expected']}"
    print(f"  recent    {rep['recent_page']:>7}   ({page})")
    if rep["worker_killed"]:
        print(f"  worker SIGKILLed mid-run and restarted ({rep['workers_started']} started)")
    print(f"  e2e latency  p50 {rep['e2e_p50_ms']} ms   p99 {rep['e2e_p99_ms']} ms")
    rate = f"{rep['rate_per_s']:g} msg/s" if rep["rate_per_s"] else "unpaced"
    print(f"  wall time    send {rep['send_seconds']} s ({rate})   total {rep['total_seconds']} s")
    warm, total = rep["warmup_messages"], rep["sent"] + rep["warmup_messages"]
    pad = "\n" + " " * 15
    print(
        f"  warm-up      {warm} message went through the whole path before the timed run (so the"
        f"{pad}worker had joined its consumer group); the counts above leave it out, the"
        f"{pad}processes' own metrics below include it: {total} = {rep['sent']} + {warm}"
    )
    print(f"  run dir      {rep['run_dir']}")
    for proc in rep["processes"]:
        print(f"\n{proc['name']} (pid {proc['pid']}) — {proc['role']}")
        print(f"  log      {proc['log']}")
        if proc["metrics"]:
            print(f"  metrics  {proc['metrics_url']}")
            for name, text in proc["metrics"].items():
                print(f"    {name:<50} {text}")
        else:
            print("  metrics  (not scraped: the process was gone by the end of the run)")
    print(f"\nlog lines of one message (trace_id {rep['sample_trace_id']}):")
    for line in rep["sample_trace_lines"]:
        print("  " + line)
    print("\nleft running:")
    if backends.devstack is None:
        print("  nothing: the demo used the servers named by the IM_INFRA_* variables")
    else:
        print(
            f"  etcd {backends.etcd}, the Kafka-protocol broker {backends.kafka} and Redis"
            f" {backends.redis},\n  started by scripts/devstack for the next run"
            " (scripts/devstack status shows them)."
            "\n  Stop them with: scripts/devstack down"
        )
    print(f"  the run's logs and SQLite file stay in {rep['run_dir']}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="im-infra-demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = ap.add_subparsers(dest="command", title="commands (default: the end-to-end run)")
    ap.add_argument(
        "--messages", type=int, default=1000, help="chat messages to send (default: 1000)"
    )
    ap.add_argument(
        "--conversations",
        type=int,
        default=20,
        help="conversations the messages are spread over (default: 20)",
    )
    ap.add_argument(
        "--db-url",
        default=None,
        help="SQLAlchemy URL of the message store (default: SQLite in the run directory)",
    )
    ap.add_argument(
        "--run-dir",
        default=None,
        help="directory for the logs and the SQLite file (default: a new temporary directory)",
    )
    ap.add_argument(
        "--kill-worker-after",
        type=int,
        default=0,
        metavar="N",
        help="SIGKILL the worker once N messages are stored, then start another (default: off)",
    )
    ap.add_argument(
        "--rate",
        type=float,
        default=200,
        help="messages per second the gateway accepts; 0: as fast as possible (default: 200)",
    )
    ap.add_argument(
        "--timeout",
        type=float,
        default=120,
        metavar="SECONDS",
        help="how long to wait for every message to be stored (default: 120)",
    )
    ap.add_argument(
        "--topic", default=TOPIC, help=f"the Kafka topic the gateway writes (default: {TOPIC})"
    )
    ap.add_argument(
        "--group", default=GROUP, help=f"the workers' consumer group id (default: {GROUP})"
    )
    ap.add_argument(
        "--metrics-port",
        type=int,
        default=0,
        metavar="PORT",
        help="port of the gateway's Prometheus /metrics endpoint (default: a free one)",
    )
    ap.add_argument("--json", action="store_true", help="print the report as one JSON object")
    gw = sub.add_parser("gateway", help="run the HTTP gateway (POST /messages)")
    gw.add_argument("--host", default="127.0.0.1", help="address to listen on")
    gw.add_argument("--port", type=int, default=8080, help="port to listen on (default: 8080)")
    sub.add_parser("worker", help="run one logic worker")
    args = ap.parse_args(argv)

    if args.command == "worker":
        from im_infra_demo import worker

        stack.ensure_backends()
        return worker.main([])
    if args.command == "gateway":
        stack.ensure_backends()
        clog.init(service="im-gateway")
        with coord.connect(service="im-gateway") as provider:
            gateway = Gateway(provider)
            server = serve(gateway, args.host, args.port)
            clog.get_logger("gateway").info("listening", host=args.host, port=args.port)
            try:
                server.serve_forever()
            except KeyboardInterrupt:
                pass
            finally:
                server.server_close()
                gateway.close()
        return 0
    if args.messages < 1 or args.conversations < 1:
        ap.error("--messages and --conversations must be >= 1")
    backends = stack.ensure_backends()
    if not args.json:
        print(f"im-infra-demo: sending {args.messages} messages ...", file=sys.stderr, flush=True)
    rep = run_demo(args, backends)
    if args.json:
        print(json.dumps(rep))
    else:
        print_report(rep, backends)
    return 0 if rep["stored"] == rep["sent"] else 1


if __name__ == "__main__":
    sys.exit(main())
