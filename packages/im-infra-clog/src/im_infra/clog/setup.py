"""Configuring clog: :func:`init` and :func:`shutdown`."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterable
from typing import Literal

from loguru import logger as _loguru

from im_infra.clog._internal import stdlib
from im_infra.clog._internal.render import DEFAULT_REDACT, Redactor, Renderer
from im_infra.clog._internal.sink import Sink, TextStream
from im_infra.clog._internal.state import LEVELS, STATE
from im_infra.clog.errors import ConfigError

__all__ = ["DEFAULT_REDACT", "FORMATS", "LEVELS", "init", "shutdown"]

FORMATS = ("json", "console")
_LOCK = threading.Lock()
_loguru_default_removed = False


def _default_service() -> str:
    env = os.environ.get("IM_INFRA_SERVICE")
    if env:
        return env
    argv0 = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return argv0.removesuffix(".py") or "unknown"


def init(
    service: str | None = None,
    *,
    level: str = "INFO",
    format: Literal["json", "console"] = "json",
    sink: TextStream | None = None,
    redact: Iterable[str] = DEFAULT_REDACT,
    intercept_stdlib: bool = True,
    loguru_passthrough: bool = False,
) -> None:
    """Configure process-wide logging. Safe to call again: the new settings replace the old.

    Args:
        service: written as ``service`` on every line (default: ``$IM_INFRA_SERVICE`` or the
            program name).
        level: DEBUG, INFO, WARNING, ERROR or CRITICAL (any case).
        format: ``"json"`` (one object per line, the production format) or ``"console"``.
        sink: a text stream (any object with ``write(str)`` and ``flush()``); default is
            whatever ``sys.stdout`` is when a line is written.
        redact: key fragments whose values are written as ``***`` (case-insensitive, nested
            mappings included). Extend the defaults with ``(*clog.DEFAULT_REDACT, "pin")``.
        intercept_stdlib: route stdlib ``logging`` records (SQLAlchemy, confluent-kafka, redis,
            ...) through clog, with the logger name as namespace.
        loguru_passthrough: send clog's own lines through loguru's record pipeline too, so
            that loguru sinks the application added itself also receive them. Off by default:
            clog's loggers then render straight into clog's sink, about 3x faster (loguru still
            carries stdlib records and loguru-native calls into the same sink).

    Raises:
        ConfigError: (a ValueError) for an unknown level or format, or an empty service name.
    """
    lvl = level.upper() if isinstance(level, str) else level
    if lvl not in LEVELS:
        raise ConfigError(f"unknown log level {level!r}: allowed are {', '.join(LEVELS)}")
    if format not in FORMATS:
        raise ConfigError(f"unknown log format {format!r}: allowed are {', '.join(FORMATS)}")
    svc = service if service is not None else _default_service()
    if not isinstance(svc, str) or not svc.strip():
        raise ConfigError("service must be a non-empty str")
    if sink is not None:
        missing = [m for m in ("write", "flush") if not callable(getattr(sink, m, None))]
        if missing:
            raise ConfigError(
                f"sink must be a text stream with write() and flush(); "
                f"{type(sink).__name__} has no {' or '.join(m + '()' for m in missing)}"
            )

    out = Sink(Renderer(svc, Redactor(redact), console=(format == "console")), sink)

    global _loguru_default_removed
    with _LOCK:
        if not _loguru_default_removed:
            # loguru's own stderr handler (id 0) would print every line a second time.
            with contextlib.suppress(ValueError):
                _loguru.remove(0)
            _loguru_default_removed = True
        old = STATE.handler_id
        STATE.handler_id = _loguru.add(
            out.loguru_write,
            level=LEVELS[lvl],
            format="{message}",
            backtrace=False,
            diagnose=False,  # diagnose would print local variables: secrets included
            catch=True,
        )
        if old is not None:
            _loguru.remove(old)
        STATE.service = svc
        STATE.min_level = LEVELS[lvl]
        STATE.direct = None if loguru_passthrough else out
        STATE.configured = True
        if intercept_stdlib:
            stdlib.install(LEVELS[lvl])
        else:
            stdlib.uninstall()


def shutdown() -> None:
    """Remove clog's handler and stdlib bridge (tests; a process normally never calls this)."""
    with _LOCK:
        if STATE.handler_id is not None:
            _loguru.remove(STATE.handler_id)
            STATE.handler_id = None
        STATE.direct = None
        stdlib.uninstall()
        STATE.configured = False
