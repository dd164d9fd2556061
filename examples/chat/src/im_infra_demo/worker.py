"""The logic worker: consume chat messages, store each once, keep recent ones in Redis.

Run as its own process (``python -m im_infra_demo.worker``): the demo starts one, and the
integration test SIGKILLs it mid-stream and starts another. Each worker also serves
:data:`~im_infra_demo.schema.GET_MESSAGES` over gRPC (a conversation's stored messages),
registered under ``im-logic`` with coord's ``rpc.register_server``; the gateway calls it by
name. SIGTERM/SIGINT stop it gracefully: the consumer finishes the message in hand and commits,
then the gRPC server deregisters and drains its calls, then the cache and db close, then coord
revokes its leases.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import FrameType
from typing import Any

import grpc
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from im_infra import cache, clog, coord, db, mq
from im_infra.coord import rpc
from im_infra_demo.history import page_key
from im_infra_demo.schema import (
    CACHE_KEEP,
    GET_MESSAGES,
    LOGIC_SERVICE,
    TOPIC,
    Base,
    ChatMessage,
    StoredMessage,
    cache_key,
    tune_sqlite,
)
from im_infra_demo.telemetry import serve_metrics

SERVICE = LOGIC_SERVICE
GROUP = "im-logic"


class Worker:
    """Consumes :data:`TOPIC`; the callback is idempotent, so redelivery never duplicates.

    Each stored message and its "message stored" event (topic ``<topic>.stored``, keyed by
    conversation) commit in one transaction through the db outbox; the outbox relay publishes
    the events (at least once, in order per conversation) from a thread of its own, so a
    broker that is slow to acknowledge delays the events, never the storing of messages.
    """

    def __init__(
        self, provider: coord.Provider, name: str, topic: str = TOPIC, group: str = GROUP
    ) -> None:
        self.topic = topic
        self.log = clog.get_logger("logic")
        self.db = db.new(SERVICE, coord=provider)
        tune_sqlite(self.db.engine)
        self.outbox = db.Outbox(self.db)
        # The demo's schema (Alembic in production), created by one worker at a time: workers
        # starting together would otherwise run their DDL concurrently, and two SQLite
        # connections upgrading read transactions to writes deadlock ("database is locked" at
        # once, whatever the busy timeout).
        with provider.lock.acquire(f"{SERVICE}/schema", timeout=60):
            self.db.create_all(Base.metadata)
            self.db.create_all(self.outbox.table.metadata)
        self.producer = mq.new_producer(SERVICE, coord=provider)
        # SQLite is cheap to poll: a short idle pause keeps the events close behind the rows
        self.relay = db.OutboxRelay(self.db, self.producer, message=mq.Message, poll_interval=0.05)
        self._relay_stop = threading.Event()
        self._relay_thread = threading.Thread(
            target=self.relay.run, args=(self._relay_stop,), name="outbox-relay", daemon=True
        )
        self._relay_thread.start()
        self.cache = cache.new(SERVICE, coord=provider)
        # idempotency keys, per consumer group and topic: a message redelivered after a crash
        # or a rebalance is skipped before it reaches the database (whose primary key stays
        # the last guard)
        self.once = self.cache.once(f"{group}:{topic}")
        self.pages = self.cache.aside()
        # Static group membership (KIP-345): a worker restarted under the same name takes
        # over its predecessor's partitions at once, instead of the group waiting for the
        # dead member's session to expire (which the local broker, noida-db, never does).
        self.consumer = mq.new_consumer(
            SERVICE,
            group,
            coord=provider,
            # and a short fetch wait: at chat rates a fetch rarely fills up
            rdkafka_config={"group.instance.id": name, "fetch.wait.max.ms": 100},
            # a failing callback (the database away, say) is retried for about half a
            # minute, then the message goes to <topic>.dlq: never skipped silently
            retry=mq.RetryPolicy(max_attempts=10, backoff=0.2, max_backoff=5.0),
        )

    def handle(self, msg: mq.Message) -> None:
        assert msg.value is not None
        raw = msg.value if isinstance(msg.value, bytes) else msg.value.encode()
        chat = ChatMessage.from_json(raw)
        try:
            outcome = self.once.run(str(chat.msg_id), lambda: self._store(chat))
            stored = outcome.value and not outcome.duplicate
        except cache.OnceInProgress:  # a worker that died mid-message holds the mark
            stored = self._store(chat)
        except cache.CacheUnavailable as exc:
            # Redis is down (or restarted mid-call): the message's primary key is the guard.
            # Failing here would lose the message (the consumer skips what its callback
            # could not handle once its retries are spent), and Redis is no store of record.
            self.log.warning("idempotency keys unavailable; storing by primary key", error=exc)
            stored = self._store(chat)
        try:
            self._update_cache(chat, raw, stored)
        except cache.CacheUnavailable as exc:  # readers fall back to the database
            self.log.warning("recent-messages cache not updated", error=exc)
        self.log.info(
            "message stored" if stored else "duplicate message skipped",
            msg_id=chat.msg_id,
            conversation=chat.conversation,
            partition=msg.partition,
            offset=msg.offset,
        )

    def _update_cache(self, chat: ChatMessage, raw: bytes, stored: bool) -> None:
        if stored:
            self.pages.invalidate(page_key(chat.conversation))  # readers reload the page
        # ZADD is idempotent (member = the message's canonical JSON), so a redelivered message
        # that was already cached changes nothing; the trim keeps the newest CACHE_KEEP.
        key = cache_key(chat.conversation)
        with self.cache.pipeline() as p:
            p.zadd(key, {raw.decode(): float(chat.msg_id)})
            p.zremrange_by_rank(key, 0, -(CACHE_KEEP + 1))
            p.execute()

    def _store(self, chat: ChatMessage) -> bool:
        """Insert the message unless its id is already stored; True if inserted.

        Insert first and let the primary key refuse a duplicate: a transaction that read
        before writing would, on SQLite, fail at once ("database is locked") whenever the
        relay thread committed in between, instead of waiting its turn to write.
        """
        try:
            with self.db.transaction() as s:
                s.add(
                    StoredMessage(
                        msg_id=chat.msg_id,
                        conversation=chat.conversation,
                        sender=chat.sender,
                        text=chat.text,
                        run_id=chat.run_id,
                        trace_id=clog.trace_id() or "",
                        sent_at=chat.sent_at,
                        stored_at=time.time(),
                    )
                )
                event = {"msg_id": chat.msg_id, "conversation": chat.conversation}
                self.outbox.add(
                    f"{self.topic}.stored", key=chat.conversation, value=json.dumps(event)
                )
        # the message is stored already (by a worker killed after its commit, or a concurrent
        # one): db raises its own IntegrityError (SQLAlchemy's, should one escape untranslated)
        except (db.IntegrityError, IntegrityError):
            return False
        return True

    def _relay_round(self) -> int:
        """Publish committed outbox events (also a predecessor's, after a crash)."""
        try:
            return self.relay.run_once()
        except db.DBError as exc:  # left unsent: the next round publishes it
            self.log.warning("outbox relay round failed", error=str(exc))
            return 0

    def recent(self, conversation: str, limit: int = CACHE_KEEP) -> list[dict[str, Any]]:
        """The conversation's newest stored messages, newest first."""
        query = (
            select(StoredMessage)
            .where(StoredMessage.conversation == conversation)
            .order_by(StoredMessage.msg_id.desc())
            .limit(limit)
        )
        with self.db.session() as s:
            return [
                {
                    "msg_id": m.msg_id,
                    "conversation": m.conversation,
                    "sender": m.sender,
                    "text": m.text,
                    "sent_at": m.sent_at,
                    "trace_id": m.trace_id,
                }
                for m in s.scalars(query)
            ]

    def run(self) -> None:
        self.consumer.subscribe([self.topic], self.handle)

    def close(self) -> None:
        self.consumer.close()
        self._relay_stop.set()  # the relay thread ends after its current round
        self._relay_thread.join()
        while self._relay_round():  # what the last messages stored
            pass
        self.relay.close()
        self.producer.close()
        self.cache.close()
        self.db.close()


def serve_rpc(worker: Worker, name: str, host: str) -> tuple[grpc.Server, int]:
    """A started gRPC server for :data:`GET_MESSAGES` on a free port of ``host``."""

    def get_messages(request: bytes, context: grpc.ServicerContext) -> bytes:
        conversation = request.decode()
        messages = worker.recent(conversation)
        worker.log.info("messages read", conversation=conversation, count=len(messages))
        return json.dumps({"served_by": name, "messages": messages}).encode()

    service, method = GET_MESSAGES.strip("/").split("/")
    handler: grpc.RpcMethodHandler[bytes, bytes] = grpc.unary_unary_rpc_method_handler(get_messages)
    server = grpc.server(
        ThreadPoolExecutor(max_workers=8), interceptors=[rpc.TraceServerInterceptor()]
    )
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler(service, {method: handler})]
    )
    port = server.add_insecure_port(f"{host}:0")
    server.start()
    return server, port


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="GoChat logic worker (im-infra demo)")
    ap.add_argument("--name", default=f"{socket.gethostname()}-{os.getpid()}")
    ap.add_argument("--topic", default=TOPIC)
    ap.add_argument("--group", default=GROUP, help="consumer group id")
    ap.add_argument(
        "--metrics-port", type=int, default=0, help="Prometheus /metrics port (0: a free one)"
    )
    ap.add_argument("--rpc-host", default="127.0.0.1", help="the address the gRPC server binds")
    args = ap.parse_args(argv)
    clog.init(service=SERVICE)
    log = clog.get_logger("logic")
    metrics_port = serve_metrics(args.metrics_port)
    with coord.connect(service=SERVICE) as provider:
        worker = Worker(provider, args.name, args.topic, args.group)
        server, rpc_port = serve_rpc(worker, args.name, args.rpc_host)
        reg = rpc.register_server(
            provider.registry,
            server,
            SERVICE,
            f"{args.rpc_host}:{rpc_port}",
            instance_id=args.name,
            metadata={"group": args.group},
            drain_delay=0.5,
            grace=5,
        )
        log.info("worker started", instance=args.name, metrics_port=metrics_port, rpc_port=rpc_port)

        def stop(signum: int, _frame: FrameType | None) -> None:
            log.info("stopping", signal=signal.Signals(signum).name)
            # close() waits for the consume loop, which runs in this (main) thread: do it
            # from another thread so the signal handler returns at once.
            threading.Thread(target=worker.consumer.close, daemon=True).start()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        try:
            worker.run()
        finally:
            reg.stop()  # deregister, then drain the gRPC calls in flight (they read the db)
            worker.close()
            log.info("worker stopped", instance=args.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
