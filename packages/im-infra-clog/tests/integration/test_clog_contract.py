"""``clog.testing.capture_logs`` against the real output: the same log calls, read back from
the JSON lines clog writes and from the capture, must give the same records. No server needed."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Callable
from typing import Any

import pytest

from im_infra import clog
from im_infra.clog.testing import capture_logs

Reader = Callable[[Callable[[], None]], list[dict[str, Any]]]

_LINE_KEYS = {"time", "level", "service", "msg", "namespace", "trace_id", "span_id", "error"}


def _from_output(action: Callable[[], None]) -> list[dict[str, Any]]:
    """The real thing: run ``action`` under clog.init and parse its JSON lines into records."""
    buf = io.StringIO()
    clog.init(service="contract-svc", sink=buf, level="DEBUG")
    try:
        action()
    finally:
        clog.shutdown()
    out = []
    for raw in buf.getvalue().splitlines():
        line = json.loads(raw)
        rec = {
            "level": line["level"],
            "msg": line["msg"],
            "service": line["service"],
            "namespace": line.get("namespace"),
            "trace_id": line.get("trace_id"),
            "fields": {k: v for k, v in line.items() if k not in _LINE_KEYS},
        }
        if "error" in line:
            rec["error"] = {"type": line["error"]["type"], "message": line["error"]["message"]}
        out.append(rec)
    return out


def _from_capture(action: Callable[[], None]) -> list[dict[str, Any]]:
    """The helper: the same calls under clog.init, read through capture_logs."""
    buf = io.StringIO()
    clog.init(service="contract-svc", sink=buf, level="DEBUG")
    try:
        with capture_logs() as logs:
            action()
    finally:
        clog.shutdown()
    assert buf.getvalue() == "", "capture_logs must not write lines by default"
    out = []
    for rec in logs:
        rec = dict(rec)
        if "error" in rec:
            rec["error"] = {"type": rec["error"]["type"], "message": rec["error"]["message"]}
        out.append(rec)
    return out


@pytest.fixture(params=["capture", "output"])
def read(request: pytest.FixtureRequest) -> Reader:
    return _from_capture if request.param == "capture" else _from_output


def test_levels_msg_service_fields(read: Reader) -> None:
    def action() -> None:
        log = clog.get_logger("chat")
        log.debug("d", n=1)
        log.info("i", user="u1", nested={"a": [1, 2]})
        log.warning("w")
        log.error("e", ok=False)
        log.critical("c", ratio=0.5)

    recs = read(action)
    assert [(r["level"], r["msg"]) for r in recs] == [
        ("debug", "d"),
        ("info", "i"),
        ("warning", "w"),
        ("error", "e"),
        ("critical", "c"),
    ]
    assert {r["service"] for r in recs} == {"contract-svc"}
    assert {r["namespace"] for r in recs} == {"chat"}
    assert recs[1]["fields"] == {"user": "u1", "nested": {"a": [1, 2]}}
    assert recs[3]["fields"] == {"ok": False}


def test_trace_ids(read: Reader) -> None:
    def action() -> None:
        log = clog.get_logger().named("a").bind(room=3)
        log.info("none")
        with clog.trace_context("t-bound"):
            log.info("bound")
            pinned = clog.from_context("p")
        pinned.info("pinned later")
        log.info("explicit", trace_id="t-explicit")

    recs = read(action)
    assert [(r["msg"], r["trace_id"]) for r in recs] == [
        ("none", None),
        ("bound", "t-bound"),
        ("pinned later", "t-bound"),
        ("explicit", "t-explicit"),
    ]
    assert recs[0]["namespace"] == "a" and recs[0]["fields"] == {"room": 3}
    assert recs[2]["namespace"] == "p"


def test_secrets_redacted_and_exceptions(read: Reader) -> None:
    def action() -> None:
        log = clog.get_logger()
        log.info("login", password="hunter2", cfg={"api_key": "k", "host": "h"})
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed", step=2)

    recs = read(action)
    assert recs[0]["fields"] == {"password": "***", "cfg": {"api_key": "***", "host": "h"}}
    assert recs[1]["level"] == "error"
    assert recs[1]["error"] == {"type": "ValueError", "message": "boom"}
    assert recs[1]["fields"] == {"step": 2}


def test_threads(read: Reader) -> None:
    def action() -> None:
        log = clog.get_logger()
        threads = [threading.Thread(target=log.info, args=(f"t{i}",)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    assert sorted(r["msg"] for r in read(action)) == ["t0", "t1", "t2", "t3"]


# ------------------------------------------------------------------ capture-only behaviour
def test_capture_without_init_and_outside_block() -> None:
    log = clog.get_logger("x")
    with capture_logs() as logs:
        log.debug("below any level")
    log.info("after the block")
    assert logs == [
        {
            "level": "debug",
            "msg": "below any level",
            "service": None,
            "namespace": "x",
            "trace_id": None,
            "fields": {},
        }
    ]


def test_passthrough_and_nesting() -> None:
    buf = io.StringIO()
    clog.init(service="svc", sink=buf)
    try:
        with capture_logs() as outer, capture_logs(passthrough=True) as inner:
            clog.get_logger().info("both")
        with capture_logs() as quiet:
            clog.get_logger().info("quiet")
    finally:
        clog.shutdown()
    assert [r["msg"] for r in outer] == [r["msg"] for r in inner] == ["both"]
    assert [r["msg"] for r in quiet] == ["quiet"]
    assert [json.loads(x)["msg"] for x in buf.getvalue().splitlines()] == ["both"]
