"""im_infra.clog: context-aware structured JSON logging on loguru.

Every line is one JSON object on stdout with ``time`` (RFC 3339, UTC, ms), ``level``,
``service``, ``msg``, ``trace_id`` when one is bound, the caller's fields, and an ``error``
object (type, message, stack) for exceptions::

    from im_infra import clog

    clog.init(service="im-logic")
    log = clog.get_logger("chat")
    with clog.trace_context() as tid:
        log.info("message stored", msg_id=42)
"""

from im_infra.clog.context import (
    new_trace_id,
    reset_trace_id,
    set_trace_id,
    trace_context,
    trace_id,
)
from im_infra.clog.errors import ClogError, ConfigError
from im_infra.clog.logger import Logger, StructLogger, from_context, get_logger
from im_infra.clog.setup import DEFAULT_REDACT, FORMATS, LEVELS, init, shutdown

__all__ = [
    "DEFAULT_REDACT",
    "FORMATS",
    "LEVELS",
    "ClogError",
    "ConfigError",
    "Logger",
    "StructLogger",
    "from_context",
    "get_logger",
    "init",
    "new_trace_id",
    "reset_trace_id",
    "set_trace_id",
    "shutdown",
    "trace_context",
    "trace_id",
]
