"""Testing helpers for services that log with clog.

:func:`capture_logs` collects the structured records written by clog loggers inside a ``with``
block, without touching the application's logging configuration (like
``structlog.testing.capture_logs``)::

    from im_infra import clog
    from im_infra.clog.testing import capture_logs

    def test_greets() -> None:
        with capture_logs() as logs:
            clog.get_logger("chat").info("hello", user=7)
        assert logs == [
            {"level": "info", "msg": "hello", "service": None, "namespace": "chat",
             "trace_id": None, "fields": {"user": 7}}
        ]
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from im_infra.clog._internal.capture import ACTIVE

__all__ = ["capture_logs"]


@contextlib.contextmanager
def capture_logs(*, passthrough: bool = False) -> Iterator[list[dict[str, Any]]]:
    """Collect every line clog loggers write inside the block, from any thread.

    Each record is a dict with ``level`` ("debug" … "critical"), ``msg``, ``service`` (the
    ``clog.init`` service, None before init), ``namespace``, ``trace_id`` (None when unbound),
    ``fields`` (the caller's fields, secrets redacted as in the output) and, for
    ``log.exception``, ``error`` (type, message, stack). Every level is captured whatever the
    configured level. With ``passthrough`` the lines are also written as usual; by default they
    are not (the test's output stays clean). Captures nest: each sees every line.
    """
    sink: list[dict[str, Any]] = []
    ACTIVE.add(sink, passthrough)
    try:
        yield sink
    finally:
        ACTIVE.remove(sink)
