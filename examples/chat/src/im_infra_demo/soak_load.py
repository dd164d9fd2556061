"""The soak's gateway process: the demo's :class:`~im_infra_demo.gateway.Gateway` at a steady rate.

Run by ``scripts/soak`` (``python -m im_infra_demo.soak_load``), never by hand. It sends one
warm-up message and waits until the worker has stored it, then accepts ``--rate`` messages a
second for ``--seconds`` and appends one JSON line per event to ``--journal``:

- ``{"seq", "msg_id", "sent_at"}`` when the gateway accepted the message (handed it to mq),
- ``{"seq", "ok": true, "t"}`` or ``{"seq", "ok": false, "error", "t"}`` when its delivery
  report came (``t``: the time it came).

The journal is what the soak's accounting starts from (what the gateway sent and what Kafka
acknowledged); keeping it on disk keeps this process's memory flat however long it runs.
SIGTERM stops the sending early; the producer is flushed and closed either way.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from types import FrameType
from typing import IO

from im_infra import clog, coord, db, mq
from im_infra_demo.gateway import Gateway
from im_infra_demo.schema import StoredMessage, tune_sqlite


class Journal:
    """Append-only JSON lines, one writer thread at a time (sends and delivery reports)."""

    def __init__(self, out: IO[str]) -> None:
        self._out = out
        self._lock = threading.Lock()

    def write(self, **record: object) -> None:
        line = json.dumps(record, separators=(",", ":")) + "\n"
        with self._lock:
            self._out.write(line)

    def flush(self) -> None:
        with self._lock:
            self._out.flush()


def _wait_stored(store: db.DBProvider, msg_id: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with store.session() as s:
            if s.get(StoredMessage, msg_id) is not None:
                return
        time.sleep(0.05)
    raise RuntimeError(f"the warm-up message {msg_id} was not stored within {timeout:.0f}s")


def run(args: argparse.Namespace, journal: Journal, stop: threading.Event) -> None:
    log = clog.get_logger("soak.load")
    with coord.connect(service="im-gateway") as provider:
        gateway = Gateway(provider, args.run_id, args.topic)
        try:
            store = db.new("im-soak-load", coord=provider, dsn=args.db_url)
            tune_sqlite(store.engine)
            try:
                warm = gateway.accept("warmup", "soak", "warm-up", run_id=f"warm-{args.run_id}")
                _wait_stored(store, warm.msg_id, args.warmup_timeout)
            finally:
                store.close()
            journal.write(event="start", t=time.time())
            log.info("sending", rate=args.rate, seconds=args.seconds)
            conversations = [f"{args.run_id}-c{i:03d}" for i in range(args.conversations)]
            t0 = time.monotonic()
            seq = 0
            while not stop.is_set():
                due = t0 + seq / args.rate
                if due - t0 >= args.seconds:
                    break
                ahead = due - time.monotonic()
                if ahead > 0 and stop.wait(ahead):
                    break
                conv = conversations[seq % len(conversations)]

                def done(err: mq.MQError | None, seq: int = seq) -> None:
                    if err is None:
                        journal.write(seq=seq, ok=True, t=time.time())
                    else:
                        journal.write(
                            seq=seq, ok=False, error=f"{type(err).__name__}: {err}", t=time.time()
                        )

                try:
                    with clog.trace_context():
                        chat = gateway.accept(conv, f"user{seq % 7}", f"soak #{seq}", done)
                except mq.MQError as exc:  # not queued: the sender is told at once
                    journal.write(seq=seq, msg_id=None, sent_at=time.time(), error=str(exc))
                else:
                    journal.write(seq=seq, msg_id=chat.msg_id, sent_at=chat.sent_at)
                seq += 1
                if seq % 500 == 0:
                    journal.flush()
            gateway.producer.flush()
        finally:
            gateway.close()  # flushes, then reports what is left as failed: nothing is dropped
            journal.write(event="end", t=time.time())
            journal.flush()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="the soak's gateway process (run by scripts/soak)")
    ap.add_argument("--run-id", required=True, help="tag of the run's messages")
    ap.add_argument("--topic", required=True, help="the Kafka topic the gateway writes")
    ap.add_argument("--db-url", required=True, help="the store, to see the warm-up arrive")
    ap.add_argument("--journal", required=True, help="JSON-lines file of sends and acks")
    ap.add_argument("--rate", type=float, required=True, help="messages per second")
    ap.add_argument("--seconds", type=float, required=True, help="how long to send")
    ap.add_argument("--conversations", type=int, default=20, help="conversations (default: 20)")
    ap.add_argument(
        "--warmup-timeout", type=float, default=120, help="seconds to wait for the warm-up"
    )
    args = ap.parse_args(argv)
    clog.init(service="im-gateway")
    stop = threading.Event()

    def on_term(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_term)
    with open(args.journal, "a") as out:
        run(args, Journal(out), stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
