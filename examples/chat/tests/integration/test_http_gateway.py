"""The demo's HTTP gateway: POST /messages publishes to Kafka with the request's trace id."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
import uuid
from typing import Any

import pytest
from im_infra_demo.gateway import Gateway, serve
from im_infra_demo.schema import ChatMessage

from im_infra import cache, coord, mq


def _post(port: int, body: bytes, trace: str | None = None) -> tuple[int, dict[str, object]]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/messages", data=body, method="POST")
    if trace:
        req.add_header("X-Trace-Id", trace)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_post_publishes_with_the_request_trace_id(etcd_endpoints: str, kafka_brokers: str) -> None:
    topic = f"gochat.http.{uuid.uuid4().hex[:8]}"
    overrides: dict[str, Any] = {"common": {"brokers": kafka_brokers.split(",")}}
    with coord.connect(etcd_endpoints, service="im-gateway") as provider:
        with mq.new_admin_client("test", **overrides) as admin:
            admin.create_topic(topic, partitions=1, replication_factor=1)
        sender = f"flooder-{uuid.uuid4().hex[:8]}"
        gateway = Gateway(
            provider, "http-test", topic, send_limit=cache.TokenBucket(rate=0.01, burst=3)
        )
        server = serve(gateway, "127.0.0.1", 0)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            port = server.server_address[1]
            body = json.dumps({"conversation": "c1", "sender": "u1", "text": "hello"}).encode()
            status, doc = _post(port, body, trace="trace-http-1")
            assert status == 202
            assert doc["trace_id"] == "trace-http-1"
            assert _post(port, b'{"sender": "x"}')[0] == 400
            assert _post(port, b"not json")[0] == 400
            # per-sender rate limit: the gateway's limiter allows 3 at once here
            flood = json.dumps({"conversation": "c2", "sender": sender, "text": "x"}).encode()
            codes = [_post(port, flood)[0] for _ in range(5)]
            assert codes == [202, 202, 202, 429, 429]
            gateway.producer.flush()
        finally:
            server.shutdown()
            server.server_close()
            gateway.close()

    received: list[mq.Message] = []
    consumer = mq.new_consumer(
        "test", f"g-{uuid.uuid4().hex[:8]}", consumer={"autoOffsetReset": "earliest"}, **overrides
    )

    def handle(msg: mq.Message) -> None:
        received.append(msg)
        consumer.close()

    stopper = threading.Timer(30, consumer.close)
    stopper.start()
    try:
        consumer.subscribe([topic], handle)
    finally:
        stopper.cancel()
    if not received:
        pytest.fail("the gateway's message never reached Kafka")
    (msg,) = received
    assert msg.trace_id == "trace-http-1"
    assert msg.value is not None
    chat = ChatMessage.from_json(msg.value if isinstance(msg.value, bytes) else msg.value.encode())
    assert chat.msg_id == doc["msg_id"]
    assert (chat.conversation, chat.sender, chat.text) == ("c1", "u1", "hello")
