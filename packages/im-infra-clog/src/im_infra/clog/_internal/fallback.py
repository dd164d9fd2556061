"""Where clog's loggers write before :func:`clog.init`: ordinary stdlib ``logging`` loggers.

A library must not configure the application's logging, so until the application calls
``clog.init()`` nothing global is touched: a line from ``clog.get_logger("coord").named("lease")``
becomes a record of the stdlib logger ``im_infra.coord.lease``, handled by whatever the
application configured (``logging.basicConfig``, its own handlers, or Python's last-resort
handler for warnings and errors). The message carries the fields as ``key=value`` (secrets
redacted with :data:`DEFAULT_REDACT`) so that a plain text handler shows them; the redacted
fields and the trace id are also attributes of the record (``im_infra_fields``, ``trace_id``) for
structured handlers.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from im_infra.clog._internal.render import DEFAULT_REDACT, REDACTED, Redactor

ROOT = "im_infra"
_REDACTOR = Redactor(DEFAULT_REDACT)
_LOGGERS: dict[str | None, logging.Logger] = {}


def stdlib_logger(namespace: str | None) -> logging.Logger:
    """The stdlib logger for a clog namespace: ``im_infra.<namespace>`` (``im_infra`` for none)."""
    lg = _LOGGERS.get(namespace)
    if lg is None:
        lg = logging.getLogger(f"{ROOT}.{namespace}" if namespace else ROOT)
        if len(_LOGGERS) < 1024:
            _LOGGERS[namespace] = lg
    return lg


def _text(value: Any) -> str:
    if value is REDACTED:
        return value
    return repr(value) if isinstance(value, str) else str(value)


def emit(
    levelno: int,
    msg: str,
    namespace: str | None,
    trace_id: str | None,
    fields: Mapping[str, Any],
    exc: tuple[Any, BaseException | None, Any] | None = None,
) -> None:
    """Hand one line to the stdlib logger of ``namespace`` (if that logger is enabled for it)."""
    lg = stdlib_logger(namespace)
    if not lg.isEnabledFor(levelno):
        return
    clean = {
        str(k): REDACTED if _REDACTOR.is_secret(str(k)) else _REDACTOR.clean(v)
        for k, v in fields.items()
    }
    parts = [msg, *(f"{k}={_text(v)}" for k, v in clean.items())]
    if trace_id:
        parts.append(f"trace_id={trace_id}")
    exc_info = exc[1] if exc is not None and exc[1] is not None else None
    lg.log(
        levelno,
        "%s",
        " ".join(parts),
        exc_info=exc_info,
        extra={"im_infra_fields": clean, "trace_id": trace_id},
        stacklevel=4,
    )
