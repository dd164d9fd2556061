"""scripts/soak: the demo pipeline at a steady rate for N minutes under a chaos schedule.

  scripts/soak --minutes 3              the CI variant: each fault once
  scripts/soak --minutes 30 --report docs/soak-30min

The soak runs on a stack of its own (never the machine's servers, never another devstack's):
``scripts/devstack`` with ``IM_INFRA_DEVSTACK_DIR=<dir>/stack`` and a Redis of its own on a free
port, emptied at the start (``devstack reset``) and stopped at the end (``devstack down``). The
database is the demo's SQLite file in the run directory.

Processes: the gateway (:mod:`im_infra_demo.soak_load`: the demo's Gateway sending ``--rate``
messages a second, journaling each send and delivery report) and one logic worker
(:mod:`im_infra_demo.worker`, as the demo starts it). After a first calm minute, one fault every
``--chaos-every`` seconds, in turn: the worker SIGKILLed (a new one starts under the same name),
the broker, Redis and etcd each stopped with SIGTERM and started again by devstack (same port,
same data; this Redis keeps nothing on disk). Every 5 s the RSS, open descriptors and CPU time
of each process are sampled from /proc.

At the end the account (:mod:`im_infra_demo.soak_report`): sent, acknowledged, stored exactly
once, lost (split into lost by the broker, when the topic no longer holds an acknowledged
message, and lost by im-infra, when it does), p50/p99 and the broker's acknowledgement p99 per
minute, RSS, descriptors and CPU share per minute, and the issue's targets. Exit status 0
when nothing was lost by im-infra and storage was exactly once (with --strict: when every
target was met), else 1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import confluent_kafka
from sqlalchemy import create_engine, func, select

from im_infra import clog, coord, mq
from im_infra_demo import cli
from im_infra_demo.schema import StoredMessage
from im_infra_demo.soak_report import ChaosEvent, Row, Sample, build, markdown, plot, read_journal

KINDS = ("worker", "broker", "redis", "etcd")
#: devstack's name for each server the chaos restarts, and the role the report gives it.
SERVERS = {"broker": "kafka", "redis": "redis", "etcd": "etcd"}
SAMPLE_EVERY_S = 5.0
CALM_FIRST_S = 60.0


def _log(msg: str) -> None:
    print(f"soak: {msg}", file=sys.stderr, flush=True)


def _repo() -> Path:
    for parent in Path(__file__).resolve().parents:
        if (parent / "scripts" / "devstack").is_file():
            return parent
    raise RuntimeError("scripts/devstack not found above the demo's sources")


def schedule(seconds: float, every: float) -> list[tuple[float, str]]:
    """Fault times (seconds after the start of sending) and kinds: none in the first minute or
    the last half minute; one every ``every`` seconds in turn, closer together when the run is
    too short for each kind to come once."""
    span = seconds - CALM_FIRST_S - 30
    if span <= 0:
        return []
    step = min(every, span / len(KINDS))
    n = max(len(KINDS), int(span // step))
    return [(CALM_FIRST_S + i * step, KINDS[i % len(KINDS)]) for i in range(n)]


class Stack:
    """The soak's own devstack: etcd, the broker and a Redis, under ``<dir>/stack``."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.script = _repo() / "scripts" / "devstack"
        os.environ["IM_INFRA_DEVSTACK_DIR"] = str(base)
        for var in ("IM_INFRA_ETCD_ENDPOINTS", "IM_INFRA_KAFKA_BROKERS", "IM_INFRA_REDIS_URL"):
            os.environ.pop(var, None)  # never the servers the caller's environment names

    def devstack(self, *args: str, capture: bool = False) -> str:
        out = subprocess.run(
            [sys.executable, str(self.script), *args],
            check=True,
            text=True,
            stdout=subprocess.PIPE if capture else sys.stderr,
        )
        return out.stdout or ""

    def state(self) -> dict[str, Any]:
        try:
            return dict(json.loads((self.base / "run" / "state.json").read_text()))
        except (OSError, ValueError):
            return {}

    def up(self) -> None:
        self.devstack("reset")  # this stack only: its own data from an earlier soak
        os.environ["IM_INFRA_DEVSTACK_REDIS_PORT"] = str(cli._free_port())
        self.devstack("up", "--demo")
        for line in self.devstack("env", capture=True).splitlines():
            key, _, value = line.removeprefix("export ").partition("=")
            os.environ[key] = value
        redis = self.state().get("redis", {})
        if not redis.get("pid"):  # a Redis already answered on the port: not ours to restart
            raise RuntimeError(f"the soak's Redis port {redis.get('port')} is taken; run again")

    def pid(self, server: str) -> int | None:
        pid = self.state().get(server, {}).get("pid")
        return int(pid) if pid else None

    def restart(self, server: str) -> str:
        """SIGTERM the server, wait for it to exit, start it again; returns what happened."""
        pid = self.pid(server)
        if pid is None:
            raise RuntimeError(f"the soak's {server} has no pid in {self.base}")
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        how = "SIGTERM"
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
            how = "SIGTERM, then SIGKILL after 15 s"
        while _alive(pid):
            time.sleep(0.05)
        self.devstack("up", server)
        return f"{how}; pid {pid} -> {self.pid(server)}"


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


_TICKS = os.sysconf("SC_CLK_TCK")


def sample(t: float, role: str, pid: int | None) -> Sample | None:
    """RSS, open descriptors and CPU time of a live process, from /proc (None if it is gone)."""
    if pid is None:
        return None
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        stat = Path(f"/proc/{pid}/stat").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None
    rss = next((int(x.split()[1]) for x in status.splitlines() if x.startswith("VmRSS:")), 0)
    fields = stat.rsplit(")", 1)[1].split()  # utime and stime are fields 14 and 15 of stat(5)
    cpu = (int(fields[11]) + int(fields[12])) / _TICKS
    return Sample(t, role, pid, rss, fds, cpu)


def topic_ids(brokers: str, topic: str, run_id: str) -> dict[int, list[tuple[int, int]]]:
    """Every message id of the run the topic holds, with its (partition, offset)s.

    Read with a plain confluent-kafka consumer, assigned partition by partition from the low to
    the high watermark: a witness independent of the library under test."""
    c = confluent_kafka.Consumer(
        {
            "bootstrap.servers": brokers,
            "group.id": f"soak-scan-{run_id}",
            "enable.auto.commit": False,
        }
    )
    found: dict[int, list[tuple[int, int]]] = defaultdict(list)
    try:
        partitions = c.list_topics(topic, timeout=30).topics[topic].partitions
        for p in sorted(partitions):
            lo, hi = c.get_watermark_offsets(confluent_kafka.TopicPartition(topic, p), timeout=30)
            c.assign([confluent_kafka.TopicPartition(topic, p, lo)])
            pos, deadline = lo, time.monotonic() + 120
            while pos < hi and time.monotonic() < deadline:
                msg = c.poll(1.0)
                if msg is None or msg.error():
                    continue
                offset, value = msg.offset(), msg.value()
                if offset is None or value is None:
                    continue
                pos = offset + 1
                doc = json.loads(value)
                if doc.get("run_id") == run_id:
                    found[int(doc["msg_id"])].append((p, offset))
            if pos < hi:
                raise RuntimeError(f"could not read {topic}[{p}] up to offset {hi} (at {pos})")
    finally:
        c.close()
    return dict(found)


def stored_rows(db_url: str, run_id: str) -> list[Row]:
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            q = select(StoredMessage.msg_id, StoredMessage.sent_at, StoredMessage.stored_at)
            return [Row(*r) for r in conn.execute(q.where(StoredMessage.run_id == run_id))]
    finally:
        engine.dispose()


def stored_count(db_url: str, run_id: str) -> int:
    """How many rows the run has stored (a COUNT: the progress line and the drain poll it while
    the pipeline runs, so it must not read every row)."""
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            q = select(func.count()).select_from(StoredMessage)
            return int(conn.execute(q.where(StoredMessage.run_id == run_id)).scalar_one())
    finally:
        engine.dispose()


def _journal_lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.run_id = uuid.uuid4().hex[:10]
        self.base = Path(args.dir).resolve()
        self.run_dir = self.base / f"run-{self.run_id}"
        self.run_dir.mkdir(parents=True)
        self.db_url = f"sqlite:///{self.run_dir / 'chat.db'}"
        self.topic = f"soak.{self.run_id}"
        self.group = f"soak-{self.run_id}"
        self.journal = self.run_dir / "journal.jsonl"
        self.stack = Stack(self.base / "stack")
        self.workers: list[cli.WorkerProcess] = []
        self.events: list[ChaosEvent] = []
        self.samples: list[Sample] = []
        self.load: list[tuple[float, float]] = []  # the machine's 1-minute load average
        self.notes: list[str] = []

    # ------------------------------------------------------------------------------ processes
    def start_worker(self) -> float:
        """Start a worker (always named worker-1: static membership); returns when it has
        started (its log says so) or 60 s have passed."""
        w = cli.WorkerProcess(self.run_dir, len(self.workers) + 1, self.topic, self.group)
        self.workers.append(w)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and w.proc.poll() is None:
            if b'"worker started"' in w.log_path.read_bytes():
                break
            time.sleep(0.05)
        return time.time()

    def setup(self) -> None:
        os.environ["IM_INFRA_ENV"] = cli.ENV
        self.stack.up()
        clog.init(service="im-soak", sink=(self.run_dir / "soak.log").open("w"))
        with coord.connect(service="im-gateway") as provider:
            cli.put_config(provider, self.db_url, os.environ["IM_INFRA_REDIS_URL"])
            with mq.new_admin_client("im-gateway", coord=provider) as admin:
                for topic in (self.topic, f"{self.topic}.stored"):
                    admin.create_topic(topic, partitions=4, replication_factor=1)
        self.start_worker()

    def fault(self, kind: str) -> None:
        at = time.time()
        if kind == "worker":
            self.workers[-1].kill()
            recovered = self.start_worker()
            detail = f"SIGKILL pid {self.workers[-2].proc.pid}; new pid {self.workers[-1].proc.pid}"
        else:
            detail = self.stack.restart(SERVERS[kind])
            recovered = time.time()
        self.events.append(ChaosEvent(kind, at, recovered, detail))
        _log(f"chaos: {kind} ({detail}), back after {recovered - at:.1f}s")

    def take_samples(self, load: subprocess.Popen[bytes]) -> None:
        now = time.time()
        self.load.append((now, os.getloadavg()[0]))
        pids: dict[str, int | None] = {
            "gateway": load.pid if load.poll() is None else None,
            "worker": self.workers[-1].proc.pid if self.workers[-1].proc.poll() is None else None,
        }
        pids.update({kind: self.stack.pid(server) for kind, server in SERVERS.items()})
        for role, pid in pids.items():
            s = sample(now, role, pid)
            if s is not None:
                self.samples.append(s)

    # ------------------------------------------------------------------------------ the run
    def run(self) -> dict[str, Any]:
        args = self.args
        seconds = args.minutes * 60
        cmd = [sys.executable, "-m", "im_infra_demo.soak_load", "--run-id", self.run_id]
        cmd += ["--topic", self.topic, "--db-url", self.db_url, "--journal", str(self.journal)]
        cmd += ["--rate", str(args.rate), "--seconds", str(seconds)]
        started = time.time()
        with (self.run_dir / "gateway.log").open("wb") as out:
            load = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        try:
            t0 = self._wait_for_start(load)
            plan = [(t0 + off, kind) for off, kind in schedule(seconds, args.chaos_every)]
            if args.no_chaos:
                plan = []
            _log(f"sending {args.rate:g} msg/s for {args.minutes:g} min; {len(plan)} faults")
            next_sample, next_minute = 0.0, t0 + 60
            while load.poll() is None:
                now = time.time()
                if now >= next_sample:
                    self.take_samples(load)
                    next_sample = now + SAMPLE_EVERY_S
                if plan and now >= plan[0][0]:
                    self.fault(plan.pop(0)[1])
                if self.workers[-1].proc.poll() is not None:
                    code = self.workers[-1].proc.returncode
                    self.notes.append(f"worker exited by itself (code {code}) at {now - t0:.0f}s")
                    _log(f"WARNING: {self.notes[-1]}; starting another")
                    self.start_worker()
                if now >= next_minute:
                    _log(f"minute {round((now - t0) / 60)}: {self._progress()}")
                    next_minute += 60
                time.sleep(0.2)
            if load.returncode != 0:
                raise RuntimeError(f"the gateway exited {load.returncode}; see its log")
            self._drain(load)
        finally:
            if load.poll() is None:
                load.terminate()
                load.wait()
            codes = [w.stop() for w in self.workers if w.proc.poll() is None]
        if any(codes):
            self.notes.append(f"the last worker's exit code on SIGTERM: {codes}")
        in_topic = topic_ids(os.environ["IM_INFRA_KAFKA_BROKERS"], self.topic, self.run_id)
        rows = stored_rows(self.db_url, self.run_id)
        rep = build(
            run={
                "run_id": self.run_id,
                "run_dir": str(self.run_dir),
                "started": started,
                "minutes": args.minutes,
                "rate": args.rate,
                "chaos_every_s": args.chaos_every,
                "chaos_kinds": [] if args.no_chaos else list(KINDS),
                "workers_started": len(self.workers),
                "notes": self.notes,
            },
            journal=read_journal(_journal_lines(self.journal)),
            rows=rows,
            in_topic=in_topic,
            events=self.events,
            samples=self.samples,
            settle=args.settle,
            load=self.load,
        )
        stored = {r.msg_id for r in rows}
        journal = read_journal(_journal_lines(self.journal))
        rep["lost_in_topic"] = [
            {"msg_id": s.msg_id, "sent_s": round(s.sent_at - t0, 2), "at": in_topic[s.msg_id]}
            for s in journal.sends.values()
            if s.ok and s.msg_id in in_topic and s.msg_id not in stored
        ][:50]
        return rep

    def _wait_for_start(self, load: subprocess.Popen[bytes]) -> float:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            for line in _journal_lines(self.journal):
                if '"event":"start"' in line:
                    return float(json.loads(line)["t"])
            if load.poll() is not None:
                raise RuntimeError(f"the gateway exited {load.returncode} before sending")
            time.sleep(0.1)
        raise RuntimeError("the warm-up message was not stored within 180 s")

    def _progress(self) -> str:
        sent = sum(1 for line in _journal_lines(self.journal) if '"sent_at"' in line)
        return f"sent {sent}, stored {stored_count(self.db_url, self.run_id)}"

    def _drain(self, load: subprocess.Popen[bytes]) -> None:
        """Wait until every acknowledged message is stored, or nothing moved for --drain s."""
        acked = sum(1 for line in _journal_lines(self.journal) if '"ok":true' in line)
        last, moved = -1, time.monotonic()
        while time.monotonic() - moved < self.args.drain:
            n = stored_count(self.db_url, self.run_id)
            if n >= acked:
                return
            if n != last:
                last, moved = n, time.monotonic()
            self.take_samples(load)
            time.sleep(1)
        self.notes.append(f"drain: {last} of {acked} acknowledged stored after {self.args.drain}s")


def verdict(rep: dict[str, Any], strict: bool) -> int:
    c = rep["counts"]
    if c["lost_by_im_infra"] or c["stored_more_than_once"] or c["stored_not_sent"]:
        return 1
    if c["unreported"]:
        return 1
    if strict and not all(t["met"] is True for t in rep["targets"].values()):
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="scripts/soak",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--minutes", type=float, default=3, help="how long to send (default: 3)")
    ap.add_argument("--rate", type=float, default=20, help="messages per second (default: 20)")
    ap.add_argument(
        "--chaos-every",
        type=float,
        default=120,
        metavar="SECONDS",
        help="seconds between faults; shorter when the run is too short for each kind to come "
        "once (default: 120)",
    )
    ap.add_argument("--no-chaos", action="store_true", help="no faults: a baseline run")
    ap.add_argument(
        "--settle",
        type=float,
        default=30,
        metavar="SECONDS",
        help="a chaos window lasts until this long after recovery (default: 30)",
    )
    ap.add_argument(
        "--drain",
        type=float,
        default=120,
        metavar="SECONDS",
        help="after sending, wait while stored messages still come in this often (default: 120)",
    )
    ap.add_argument(
        "--dir",
        default=str(_repo() / ".soak"),
        help="the soak's stack and run directories (default: .soak in the repository)",
    )
    ap.add_argument(
        "--report",
        default=None,
        metavar="PREFIX",
        help="write PREFIX.json, PREFIX.md and PREFIX.png (default: <run dir>/report)",
    )
    ap.add_argument("--strict", action="store_true", help="exit 1 unless every target is met")
    ap.add_argument("--keep-stack", action="store_true", help="leave the soak's servers running")
    args = ap.parse_args(argv)
    if args.minutes <= 0 or args.rate <= 0:
        ap.error("--minutes and --rate must be > 0")
    # a SIGTERM (CI's step timeout, say) unwinds like Ctrl-C, so that the finally below stops
    # the soak's servers: devstack starts them in sessions of their own, out of our group
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(143))
    soak = Soak(args)
    try:
        soak.setup()
        rep = soak.run()
    finally:
        if not args.keep_stack:
            with contextlib.suppress(subprocess.CalledProcessError):
                soak.stack.devstack("down")
    prefix = Path(args.report) if args.report else soak.run_dir / "report"
    prefix.parent.mkdir(parents=True, exist_ok=True)
    prefix.with_suffix(".json").write_text(json.dumps(rep, indent=1) + "\n")
    prefix.with_suffix(".md").write_text(markdown(rep))
    try:
        plot(rep, prefix.with_suffix(".png"))
    except ImportError:
        _log("matplotlib is not installed: no PNG (uv sync installs it with the dev group)")
    print(markdown(rep))
    _log(f"report: {prefix}.json, .md, .png; logs in {soak.run_dir}")
    return verdict(rep, args.strict)


if __name__ == "__main__":
    sys.exit(main())
