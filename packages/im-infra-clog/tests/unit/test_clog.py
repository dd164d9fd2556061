from __future__ import annotations

import asyncio
import contextvars
import io
import json
import logging
import re
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from im_infra import clog

TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


class Out:
    def __init__(self) -> None:
        self.buf = io.StringIO()

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.buf.getvalue().splitlines()]

    def raw(self) -> str:
        return self.buf.getvalue()


@pytest.fixture(params=[False, True], ids=["direct", "loguru_passthrough"])
def out(request: pytest.FixtureRequest) -> Iterator[Out]:
    """clog configured both ways: every line-shape test must hold for both write paths."""
    o = Out()
    clog.init(service="svc", sink=o.buf, level="DEBUG", loguru_passthrough=request.param)
    yield o
    clog.shutdown()


def test_line_shape(out: Out) -> None:
    clog.get_logger().info("hello {not a format}", user="u1", n=3)
    (line,) = out.lines()
    assert TIME_RE.match(line["time"]), line["time"]
    assert line["level"] == "info"
    assert line["service"] == "svc"
    assert line["msg"] == "hello {not a format}"
    assert line["user"] == "u1" and line["n"] == 3
    assert "trace_id" not in line and "namespace" not in line
    assert list(line)[:4] == ["time", "level", "service", "msg"]


@pytest.mark.parametrize("method", ["debug", "info", "warning", "error", "critical"])
def test_levels(out: Out, method: str) -> None:
    getattr(clog.get_logger(), method)("x")
    assert out.lines()[0]["level"] == method


def test_level_filter() -> None:
    buf = io.StringIO()
    clog.init(service="svc", sink=buf, level="warning")
    try:
        log = clog.get_logger()
        log.info("dropped")
        log.debug("dropped")
        log.warning("kept")
        logging.getLogger("lib").info("dropped too")
        logging.getLogger("lib").error("kept too")
    finally:
        clog.shutdown()
    assert [json.loads(x)["msg"] for x in buf.getvalue().splitlines()] == ["kept", "kept too"]


def test_trace_id_bound_and_restored(out: Out) -> None:
    log = clog.get_logger()
    assert clog.trace_id() is None
    with clog.trace_context("outer") as tid:
        assert tid == "outer"
        log.info("a")
        with clog.trace_context() as inner:
            assert len(inner) == 32 and inner != "outer"
            log.info("b")
        log.info("c")
    log.info("d")
    ids = [line.get("trace_id") for line in out.lines()]
    assert ids[0] == "outer" and ids[2] == "outer"
    assert ids[1] == inner
    assert ids[3] is None
    assert clog.trace_id() is None


def test_set_and_reset_trace_id() -> None:
    token = clog.set_trace_id("t1")
    assert clog.trace_id() == "t1"
    clog.reset_trace_id(token)
    assert clog.trace_id() is None


@pytest.mark.parametrize("bad", ["", 5, "x" * 129])
def test_bad_trace_id(bad: Any) -> None:
    with pytest.raises(ValueError, match="trace id"):
        clog.set_trace_id(bad)


def test_from_context_pins_trace_id(out: Out) -> None:
    with clog.trace_context("pinned"):
        log = clog.from_context("api")
    log.info("later")
    with clog.trace_context("other"):
        log.info("in other context")
    lines = out.lines()
    assert [line["trace_id"] for line in lines] == ["pinned", "pinned"]
    assert lines[0]["namespace"] == "api"


def test_asyncio_tasks_keep_their_own_trace_id(out: Out) -> None:
    log = clog.get_logger()

    async def handle(i: int) -> None:
        with clog.trace_context(f"t{i}"):
            await asyncio.sleep(0.001 * (5 - i))
            log.info("done", i=i)

    async def main() -> None:
        await asyncio.gather(*(handle(i) for i in range(5)))

    asyncio.run(main())
    lines = [line for line in out.lines() if line.get("namespace") != "asyncio"]
    assert len(lines) == 5
    assert all(line["trace_id"] == f"t{line['i']}" for line in lines)


def test_threads_with_copy_context(out: Out) -> None:
    log = clog.get_logger()
    with clog.trace_context("from-parent"):
        ctx = contextvars.copy_context()
    t = threading.Thread(target=ctx.run, args=(log.info, "in thread"))
    t.start()
    t.join()
    plain = threading.Thread(target=log.info, args=("no context",))
    plain.start()
    plain.join()
    lines = out.lines()
    assert lines[0]["trace_id"] == "from-parent"
    assert "trace_id" not in lines[1]


def test_named_and_bind(out: Out) -> None:
    log = clog.get_logger("mq").named("producer").bind(topic="t")
    log.info("sent", partition=1)
    (line,) = out.lines()
    assert line["namespace"] == "mq.producer"
    assert line["topic"] == "t" and line["partition"] == 1
    with pytest.raises(ValueError, match="non-empty"):
        log.named("")


def test_redaction_nested_and_configurable() -> None:
    buf = io.StringIO()
    clog.init(service="svc", sink=buf, redact=(*clog.DEFAULT_REDACT, "pin"))
    try:
        clog.get_logger().bind(db_password="pw1").info(
            "cfg",
            sasl_password="pw2",
            nested={"Token": "pw3", "list": [{"client_secret": "pw4"}], "ok": 1},
            user_pin="1234",
            username="alice",
        )
    finally:
        clog.shutdown()
    raw = buf.getvalue()
    for secret in ("pw1", "pw2", "pw3", "pw4", "1234"):
        assert secret not in raw
    line = json.loads(raw)
    assert line["db_password"] == "***" and line["nested"]["Token"] == "***"
    assert line["nested"]["ok"] == 1 and line["username"] == "alice"


def test_stdlib_records_routed_once(out: Out) -> None:
    # (not a real library's name: SQLAlchemy, once imported, sets its loggers to WARNING)
    lib = logging.getLogger("somelib.engine.Engine")
    with clog.trace_context("tid-1"):
        lib.info("SELECT %s", 1, extra={"api_token": "leak", "rows": 2})
    lines = out.lines()
    assert len(lines) == 1
    (line,) = lines
    assert line["namespace"] == "somelib.engine.Engine"
    assert line["msg"] == "SELECT 1"
    assert line["trace_id"] == "tid-1"
    assert line["rows"] == 2 and line["api_token"] == "***"


def test_stdlib_bad_format_args_do_not_raise(out: Out) -> None:
    # Called on clog's handler directly: pytest's own capture handler on the root logger
    # would re-raise the formatting error.
    (handler,) = [h for h in logging.getLogger().handlers if type(h).__name__ == "InterceptHandler"]
    record = logging.makeLogRecord(
        {"name": "lib", "levelno": 30, "msg": "%d items", "args": ("not-a-number",)}
    )
    handler.handle(record)
    (line,) = out.lines()
    assert "unformattable" in line["msg"]


def test_exception_object(out: Out) -> None:
    log = clog.get_logger()
    try:
        raise KeyError("missing")
    except KeyError:
        log.exception("failed", op="get")
    try:
        raise RuntimeError("lib failure")
    except RuntimeError:
        logging.getLogger("lib").exception("lib says")
    line, lib_line = out.lines()
    assert line["level"] == "error" and line["op"] == "get"
    assert line["error"]["type"] == "KeyError"
    assert "missing" in line["error"]["message"]
    assert (
        "Traceback" in line["error"]["stack"] and "test_exception_object" in line["error"]["stack"]
    )
    assert lib_line["error"]["type"] == "RuntimeError"


def test_exception_as_field(out: Out) -> None:
    clog.get_logger().warning("retrying", error=ValueError("bad"), cause=OSError("io"))
    line = out.lines()[0]
    assert line["_error"]["type"] == "ValueError"
    assert line["cause"] == {"type": "OSError", "message": "io", "stack": "OSError: io\n"}


def test_reserved_field_names_do_not_overwrite(out: Out) -> None:
    clog.get_logger().info("real", msg="fake", level="fake", service="fake", time="fake")
    line = out.lines()[0]
    assert line["msg"] == "real" and line["level"] == "info" and line["service"] == "svc"
    assert line["_msg"] == "fake" and line["_time"] == "fake"


def test_unserializable_values_become_strings(out: Out) -> None:
    class Thing:
        def __str__(self) -> str:
            return "thing!"

    clog.get_logger().info("x", obj=Thing(), b=b"bytes", s={1, 2}.__class__.__name__)
    line = out.lines()[0]
    assert line["obj"] == "thing!"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"level": "LOUD"}, "DEBUG, INFO, WARNING, ERROR, CRITICAL"),
        ({"format": "xml"}, "json, console"),
        ({"service": " "}, "service"),
        ({"sink": "out.log"}, r"sink must be a text stream .*str has no write\(\) or flush\(\)"),
        ({"sink": type("W", (), {"write": len})()}, r"W has no flush\(\)"),
    ],
)
def test_bad_config(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match) as info:
        clog.init(**kwargs)
    assert isinstance(info.value, clog.ConfigError)
    assert isinstance(info.value, clog.ClogError)


def test_console_format() -> None:
    buf = io.StringIO()
    clog.init(service="svc", sink=buf, format="console")
    try:
        with clog.trace_context("abc"):
            clog.get_logger("ns").info("hello", k="v", password="x")
    finally:
        clog.shutdown()
    text = buf.getvalue()
    assert "INFO" in text and "svc" in text and "[ns]" in text and "hello" in text
    assert "k='v'" in text and "trace_id=abc" in text and "'x'" not in text


def test_reinit_replaces_handler_without_duplicates(out: Out) -> None:
    clog.init(service="svc2", sink=out.buf)
    clog.get_logger().info("once")
    lines = out.lines()
    assert len(lines) == 1 and lines[0]["service"] == "svc2"


def test_default_sink_is_current_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    clog.init(service="svc")
    try:
        clog.get_logger().info("to stdout")
    finally:
        clog.shutdown()
    captured = capsys.readouterr()
    assert json.loads(captured.out)["msg"] == "to stdout"
    assert captured.err == ""


def test_logger_satisfies_protocol() -> None:
    assert isinstance(clog.get_logger("x"), clog.Logger)


def test_loguru_native_calls_use_clog_format(out: Out) -> None:
    from loguru import logger

    with clog.trace_context("t-native"):
        logger.bind(order=7).warning("from loguru")
    (line,) = out.lines()
    assert line["msg"] == "from loguru"
    assert line["level"] == "warning"
    assert line["order"] == 7
    assert line["trace_id"] == "t-native"


def test_passthrough_reaches_user_loguru_sinks() -> None:
    from loguru import logger

    buf = io.StringIO()
    seen: list[str] = []
    clog.init(service="svc", sink=buf, loguru_passthrough=True)
    hid = logger.add(lambda m: seen.append(m.record["message"]), level="INFO")
    try:
        clog.get_logger().info("to both", password="x")
    finally:
        logger.remove(hid)
        clog.shutdown()
    assert seen == ["to both"]
    assert json.loads(buf.getvalue())["password"] == "***"


# ------------------------------------------------------------------ OpenTelemetry spans
@pytest.fixture
def tracer() -> trace.Tracer:
    """A real SDK tracer (a local provider: the global one is left alone)."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
    return provider.get_tracer("clog-test")


def ids(span: trace.Span) -> tuple[str, str]:
    sc = span.get_span_context()
    return format(sc.trace_id, "032x"), format(sc.span_id, "016x")


def test_span_trace_id_and_span_id_on_lines(out: Out, tracer: trace.Tracer) -> None:
    log = clog.get_logger("t")
    with tracer.start_as_current_span("outer") as outer:
        log.info("in outer")
        with tracer.start_as_current_span("inner") as inner:
            log.info("in inner")
            assert clog.trace_id() == ids(inner)[0]
    log.info("after")
    first, second, after = out.lines()
    assert (first["trace_id"], first["span_id"]) == ids(outer)
    assert (second["trace_id"], second["span_id"]) == ids(inner)
    assert ids(inner)[0] == ids(outer)[0] and ids(inner)[1] != ids(outer)[1]
    assert len(first["trace_id"]) == 32 and len(first["span_id"]) == 16
    assert "trace_id" not in after and "span_id" not in after
    assert clog.trace_id() is None


def test_bound_clog_id_wins_over_span(out: Out, tracer: trace.Tracer) -> None:
    log = clog.get_logger()
    with tracer.start_as_current_span("s") as span, clog.trace_context("explicit-id"):
        log.info("x")
        assert clog.trace_id() == "explicit-id"
    with clog.trace_context("explicit-id"), tracer.start_as_current_span("s2") as span2:
        log.info("y")
    x, y = out.lines()
    assert x["trace_id"] == "explicit-id" and x["span_id"] == ids(span)[1]
    assert y["trace_id"] == "explicit-id" and y["span_id"] == ids(span2)[1]


def test_from_context_pins_the_span_trace_id(out: Out, tracer: trace.Tracer) -> None:
    with tracer.start_as_current_span("s") as span:
        pinned = clog.from_context("p")
    pinned.info("later")
    (line,) = out.lines()
    assert line["trace_id"] == ids(span)[0] and "span_id" not in line


def test_trace_context_without_arg_uses_the_span_id(out: Out, tracer: trace.Tracer) -> None:
    with tracer.start_as_current_span("s") as span, clog.trace_context() as tid:
        assert tid == ids(span)[0]
    with clog.trace_context() as fresh:
        assert fresh != ids(span)[0] and len(fresh) == 32


def test_stdlib_records_carry_the_span(out: Out, tracer: trace.Tracer) -> None:
    with tracer.start_as_current_span("s") as span:
        logging.getLogger("somelib").warning("from stdlib")
    (line,) = out.lines()
    assert (line["trace_id"], line["span_id"]) == ids(span)
    assert line["namespace"] == "somelib"


def test_caller_field_named_span_id_is_renamed(out: Out) -> None:
    clog.get_logger().info("x", span_id="mine")
    (line,) = out.lines()
    assert line["_span_id"] == "mine" and "span_id" not in line


def test_api_only_tracer_changes_nothing(out: Out) -> None:
    """Without an SDK the API's tracer makes invalid (no-op) spans: lines are unchanged."""
    noop = trace.NoOpTracer()
    with noop.start_as_current_span("s"):
        clog.get_logger().info("x")
        assert clog.trace_id() is None
    (line,) = out.lines()
    assert "trace_id" not in line and "span_id" not in line


def test_console_format_shows_span(tracer: trace.Tracer) -> None:
    buf = io.StringIO()
    clog.init(service="svc", sink=buf, format="console")
    try:
        with tracer.start_as_current_span("s") as span:
            clog.get_logger().info("hello")
    finally:
        clog.shutdown()
    tid, sid = ids(span)
    assert f"trace_id={tid}" in buf.getvalue() and f"span_id={sid}" in buf.getvalue()
