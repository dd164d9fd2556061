"""Before ``clog.init()`` clog configures nothing: its lines are ordinary stdlib records."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from loguru import logger as _loguru

from im_infra import clog


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def app_logging() -> Iterator[tuple[Capture, io.StringIO]]:
    """What an application does with ``logging.basicConfig``: one handler on the root logger."""
    clog.shutdown()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    text = io.StringIO()
    for h in saved[0]:
        root.removeHandler(h)
    plain = logging.StreamHandler(text)
    plain.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    capture = Capture()
    root.addHandler(plain)
    root.addHandler(capture)
    root.setLevel(logging.INFO)
    yield capture, text
    clog.shutdown()
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in saved[0]:
        root.addHandler(h)
    root.setLevel(saved[1])


def test_library_lines_go_to_stdlib_loggers_and_nothing_global_changes(
    app_logging: tuple[Capture, io.StringIO], capsys: pytest.CaptureFixture[str]
) -> None:
    capture, text = app_logging
    root = logging.getLogger()
    handlers_before = list(root.handlers)
    loguru_before = dict(_loguru._core.handlers)  # type: ignore[attr-defined]

    log = clog.get_logger("coord").named("lease")
    log.warning("lease lost", lease=7, password="hunter2", reason="x y")
    log.debug("below the app's level")
    try:
        raise KeyError("k")
    except KeyError:
        clog.get_logger("db").exception("boom")

    assert root.handlers == handlers_before, "the application's handlers were replaced"
    assert root.level == logging.INFO
    assert dict(_loguru._core.handlers) == loguru_before  # type: ignore[attr-defined]
    out = capsys.readouterr()
    assert out.out == "", "clog wrote to stdout without clog.init()"
    assert [(r.name, r.levelno) for r in capture.records] == [
        ("im_infra.coord.lease", logging.WARNING),
        ("im_infra.db", logging.ERROR),
    ]
    first = capture.records[0]
    assert first.getMessage() == "lease lost lease=7 password=*** reason='x y'"
    assert first.__dict__["im_infra_fields"] == {"lease": 7, "password": "***", "reason": "x y"}
    assert first.pathname == __file__  # the caller's line, not clog's
    assert capture.records[1].exc_info is not None
    assert capture.records[1].exc_info[0] is KeyError
    lines = text.getvalue().splitlines()
    assert lines[0] == "im_infra.coord.lease WARNING lease lost lease=7 password=*** reason='x y'"
    assert "hunter2" not in text.getvalue()


def test_trace_id_on_stdlib_records(app_logging: tuple[Capture, io.StringIO]) -> None:
    capture, _ = app_logging
    log = clog.get_logger("mq")
    with clog.trace_context("bound-id"):
        log.info("a")
        log.info("b", trace_id="explicit-id")
    assert [r.getMessage() for r in capture.records] == [
        "a trace_id=bound-id",
        "b trace_id=explicit-id",
    ]
    assert [r.__dict__["trace_id"] for r in capture.records] == ["bound-id", "explicit-id"]


def test_app_level_controls_library_lines(app_logging: tuple[Capture, io.StringIO]) -> None:
    capture, _ = app_logging
    logging.getLogger("im_infra.cache").setLevel(logging.ERROR)
    try:
        clog.get_logger("cache").warning("dropped")
        clog.get_logger("cache").error("kept")
        clog.get_logger("uid").info("kept too")
    finally:
        logging.getLogger("im_infra.cache").setLevel(logging.NOTSET)
    assert [r.getMessage() for r in capture.records] == ["kept", "kept too"]


def test_with_init_everything_is_json(app_logging: tuple[Capture, io.StringIO]) -> None:
    capture, _ = app_logging
    buf = io.StringIO()
    clog.init(service="svc", sink=buf)
    clog.get_logger("coord").named("lease").warning("lease lost", lease=7)
    logging.getLogger("thirdparty").warning("from a library")
    lines: list[dict[str, Any]] = [json.loads(x) for x in buf.getvalue().splitlines()]
    assert [(x["namespace"], x["msg"]) for x in lines] == [
        ("coord.lease", "lease lost"),
        ("thirdparty", "from a library"),
    ]
    assert capture.records == []  # clog.init() made clog the root logger's only handler


def test_explicit_trace_id_field_is_the_lines_trace_id() -> None:
    for passthrough in (False, True):
        buf = io.StringIO()
        clog.init(service="svc", sink=buf, loguru_passthrough=passthrough)
        try:
            with clog.trace_context("bound-id"):
                clog.get_logger().info("explicit", trace_id="given-id")
                clog.get_logger().info("bound")
                clog.get_logger().info("none given", trace_id=None)
            logging.getLogger("lib").info("stdlib", extra={"trace_id": "extra-id"})
        finally:
            clog.shutdown()
        lines = [json.loads(x) for x in buf.getvalue().splitlines()]
        assert [x.get("trace_id") for x in lines] == [
            "given-id",
            "bound-id",
            "bound-id",
            "extra-id",
        ], passthrough
        assert all("_trace_id" not in x for x in lines), lines


def test_no_stdout_without_init_even_without_app_config(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """No handler anywhere: Python's last-resort handler shows warnings on stderr; stdout and
    the root logger stay untouched."""
    clog.shutdown()
    root = logging.getLogger()
    saved = list(root.handlers)
    for h in saved:
        root.removeHandler(h)
    try:
        clog.get_logger("uid").info("quiet")
        clog.get_logger("uid").warning("shown by the last resort")
        assert root.handlers == []
    finally:
        for h in saved:
            root.addHandler(h)
    out = capsys.readouterr()
    assert out.out == ""
    assert "shown by the last resort" in out.err or logging.lastResort is None
    assert sys.stdout is not None
