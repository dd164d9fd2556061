"""The gateway: accept a chat message, give it a uid, publish it with its trace id.

Usable in-process (:meth:`Gateway.accept`, what the demo's load generator calls) and over HTTP
(:func:`serve`: ``POST /messages`` with ``{"conversation", "sender", "text"}``; an
``X-Trace-Id`` request header is honoured, else a new trace id is made). Over HTTP each sender is
rate limited (``429`` with ``Retry-After`` beyond the limit). ``GET
/conversations/{id}/messages`` asks the logic workers over gRPC, by service name through the
registry (coord's balanced channel: round robin over the live workers, retried on another
worker if one dies, the trace id in the call's metadata).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc

from im_infra import cache, clog, coord, mq, uid
from im_infra.coord import rpc
from im_infra_demo.schema import GET_MESSAGES, LOGIC_SERVICE, TOPIC, ChatMessage

SERVICE = "im-gateway"
SEND_LIMIT = cache.TokenBucket(rate=20, burst=40)
"""Sends per user over HTTP, unless redis.yaml configures ``rateLimit.limits.send``."""


class Gateway:
    def __init__(
        self,
        provider: coord.Provider,
        run_id: str = "http",
        topic: str = TOPIC,
        send_limit: cache.TokenBucket | cache.SlidingWindow | None = None,
        logic_group: str | None = None,
    ) -> None:
        """``logic_group``: call only the logic workers of that consumer group (their
        registration's ``group`` metadata); default: every registered worker."""
        self.topic = topic
        self.log = clog.get_logger("gateway")
        self.run_id = run_id
        self.ids = uid.from_coord(provider, SERVICE)
        self.producer = mq.new_producer(SERVICE, coord=provider)
        self.cache = cache.new(SERVICE, coord=provider)
        configured = "send" in self.cache.config.rate_limit.limits
        self.sends = self.cache.limiter("send", send_limit or (None if configured else SEND_LIMIT))
        self.logic = rpc.channel(
            provider.registry,
            LOGIC_SERVICE,
            idempotent={GET_MESSAGES},
            filters=None if logic_group is None else {"group": logic_group},
        )
        self._get_messages: grpc.UnaryUnaryMultiCallable[bytes, bytes] = self.logic.unary_unary(
            GET_MESSAGES
        )
        self._lock = threading.Lock()
        self.acked = 0
        self.failed = 0

    def accept(
        self,
        conversation: str,
        sender: str,
        text: str,
        on_done: Callable[[mq.MQError | None], object] | None = None,
        *,
        run_id: str | None = None,
    ) -> ChatMessage:
        """Publish one message asynchronously under the current trace id (a new one if none).
        ``run_id`` tags the message (default: the gateway's)."""
        if clog.trace_id() is None:
            with clog.trace_context():
                return self.accept(conversation, sender, text, on_done, run_id=run_id)
        chat = ChatMessage(
            msg_id=self.ids.next_id(),
            conversation=conversation,
            sender=sender,
            text=text,
            run_id=run_id or self.run_id,
            sent_at=time.time(),
        )

        def delivered(err: mq.MQError | None) -> None:
            with self._lock:
                if err is None:
                    self.acked += 1
                else:
                    self.failed += 1
            if err is not None:
                self.log.error("publish failed", msg_id=chat.msg_id, error=err)
            if on_done is not None:
                on_done(err)

        self.producer.send(
            mq.Message(topic=self.topic, key=conversation, value=chat.to_json()), callback=delivered
        )
        self.log.info("message accepted", msg_id=chat.msg_id, conversation=conversation)
        return chat

    def messages(self, conversation: str, timeout: float = 5.0) -> dict[str, Any]:
        """The conversation's newest messages, from a logic worker over gRPC."""
        reply: dict[str, Any] = json.loads(
            self._get_messages(conversation.encode(), timeout=timeout)
        )
        return reply

    def close(self) -> None:
        self.logic.close()
        self.producer.close()
        self.cache.close()
        self.ids.close()


def serve(gateway: Gateway, host: str, port: int) -> ThreadingHTTPServer:
    """An HTTP front for :class:`Gateway` (returns the server; call ``serve_forever``)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parts = self.path.strip("/").split("/")
            if len(parts) != 3 or parts[0] != "conversations" or parts[2] != "messages":
                self._reply(404, {"error": "not found"})
                return
            with clog.trace_context(self.headers.get("X-Trace-Id") or None) as tid:
                try:
                    doc = gateway.messages(parts[1])
                except grpc.RpcError as exc:
                    self._reply(503, {"error": f"logic unavailable: {exc.code().name}"})
                    return
            self._reply(200, {**doc, "trace_id": tid})

        def do_POST(self) -> None:
            if self.path != "/messages":
                self._reply(404, {"error": "not found"})
                return
            try:
                body: dict[str, Any] = json.loads(
                    self.rfile.read(int(self.headers.get("Content-Length", "0")))
                )
                fields = (str(body["conversation"]), str(body["sender"]), str(body["text"]))
            except (ValueError, KeyError, TypeError) as exc:
                self._reply(400, {"error": f"bad request: {exc}"})
                return
            limit = gateway.sends.allow(fields[1])  # per sender
            if not limit.allowed:
                self._reply(
                    429,
                    {"error": "too many messages", "retry_after": limit.retry_after},
                    {"Retry-After": str(max(1, round(limit.retry_after)))},
                )
                return
            with clog.trace_context(self.headers.get("X-Trace-Id") or None) as tid:
                chat = gateway.accept(*fields)
            self._reply(202, {"msg_id": chat.msg_id, "trace_id": tid})

        def _reply(
            self, status: int, doc: dict[str, Any], headers: dict[str, str] | None = None
        ) -> None:
            data = json.dumps(doc).encode()
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            clog.get_logger("gateway.http").debug(format % args)

    return ThreadingHTTPServer((host, port), Handler)
