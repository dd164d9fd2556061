"""Routing the stdlib ``logging`` module's records into clog (one JSON shape for all)."""

from __future__ import annotations

import logging
from typing import Any

from loguru import logger as _loguru

from im_infra.clog._internal.render import FIELDS_KEY, NS_KEY
from im_infra.clog._internal.state import level_name

# Attributes every LogRecord has; anything else on a record came from ``extra=`` and is a field.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


class InterceptHandler(logging.Handler):
    """A root-logger handler that re-emits records through loguru with the logger name as
    the namespace."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = record.getMessage()
        except Exception:  # a bad %-format in a library's call must not kill the caller
            msg = f"{record.msg!r} (unformattable args {record.args!r})"
        fields: dict[str, Any] = {
            k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")
        }
        lg = _loguru.bind(**{NS_KEY: record.name, FIELDS_KEY: fields})
        if record.exc_info and record.exc_info[0] is not None:
            lg = lg.opt(exception=record.exc_info)
        lg.log(level_name(record.levelno), msg)


def install(levelno: int) -> None:
    """Make clog the only handler of the root logger (no duplicate lines)."""
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(InterceptHandler())
    root.setLevel(levelno)


def uninstall() -> None:
    root = logging.getLogger()
    for h in list(root.handlers):
        if isinstance(h, InterceptHandler):
            root.removeHandler(h)
