"""The :class:`Logger` protocol and its loguru-backed implementation."""

from __future__ import annotations

import sys
from typing import Any, Protocol, runtime_checkable

from loguru import logger as _loguru

from im_infra.clog._internal import capture as _capture
from im_infra.clog._internal import fallback as _fallback
from im_infra.clog._internal.render import FIELDS_KEY, NS_KEY, TRACE_KEY
from im_infra.clog._internal.state import STATE
from im_infra.clog.context import trace_id

__all__ = ["Logger", "StructLogger", "from_context", "get_logger"]

_CAPTURE = _capture.ACTIVE


@runtime_checkable
class Logger(Protocol):
    """What business code types against (the seed's ``clog.Logger``)."""

    def debug(self, msg: str, /, **fields: Any) -> None: ...
    def info(self, msg: str, /, **fields: Any) -> None: ...
    def warning(self, msg: str, /, **fields: Any) -> None: ...
    def error(self, msg: str, /, **fields: Any) -> None: ...
    def critical(self, msg: str, /, **fields: Any) -> None: ...
    def exception(self, msg: str, /, **fields: Any) -> None:
        """Log at error level with the exception being handled as the ``error`` object."""
        ...

    def named(self, name: str) -> Logger:
        """A child logger whose ``namespace`` is this one's plus ``.name``."""
        ...

    def bind(self, **fields: Any) -> Logger:
        """A logger that adds ``fields`` to every line."""
        ...


class StructLogger:
    """A :class:`Logger` writing through loguru into clog's JSON sink.

    Cheap to create and immutable: ``named`` and ``bind`` return new loggers.
    """

    __slots__ = ("_fields", "_lg", "_ns", "_tid")

    def __init__(
        self,
        namespace: str | None = None,
        fields: dict[str, Any] | None = None,
        trace_id: str | None = None,
    ) -> None:
        self._ns = namespace
        self._fields = dict(fields) if fields else {}
        self._tid = trace_id
        extra: dict[str, Any] = {}
        if namespace:
            extra[NS_KEY] = namespace
        if trace_id:
            extra[TRACE_KEY] = trace_id
        self._lg = _loguru.bind(**extra) if extra else _loguru

    @property
    def namespace(self) -> str | None:
        return self._ns

    def _emit(
        self,
        level: str,
        levelno: int,
        msg: str,
        fields: dict[str, Any],
        exc: tuple[Any, BaseException | None, Any] | None = None,
    ) -> None:
        if self._fields:
            fields = {**self._fields, **fields}
        if _CAPTURE.on:
            _capture.record(level, msg, self._ns, self._tid, fields, exc)
            if not _CAPTURE.passthrough:
                return
        if not STATE.configured:
            # Before clog.init() nothing global is configured: stdlib logging carries the line.
            pinned = self._tid
            if "trace_id" in fields:
                fields = dict(fields)
                explicit = fields.pop("trace_id")
                if explicit is not None:
                    pinned = str(explicit)
            _fallback.emit(levelno, msg, self._ns, pinned or trace_id(), fields, exc)
            return
        if levelno < STATE.min_level:
            return
        direct = STATE.direct
        if direct is not None:
            direct.emit(level, msg, self._ns, self._tid, fields, exc)
            return
        lg = self._lg.bind(**{FIELDS_KEY: fields})
        if exc is not None:
            lg = lg.opt(exception=exc)
        lg.log(level.upper(), msg)

    def debug(self, msg: str, /, **fields: Any) -> None:
        self._emit("debug", 10, msg, fields)

    def info(self, msg: str, /, **fields: Any) -> None:
        self._emit("info", 20, msg, fields)

    def warning(self, msg: str, /, **fields: Any) -> None:
        self._emit("warning", 30, msg, fields)

    def error(self, msg: str, /, **fields: Any) -> None:
        self._emit("error", 40, msg, fields)

    def critical(self, msg: str, /, **fields: Any) -> None:
        self._emit("critical", 50, msg, fields)

    def exception(self, msg: str, /, **fields: Any) -> None:
        self._emit("error", 40, msg, fields, sys.exc_info())

    def named(self, name: str) -> StructLogger:
        if not name:
            raise ValueError("logger name must be a non-empty str")
        ns = f"{self._ns}.{name}" if self._ns else name
        return StructLogger(ns, self._fields, self._tid)

    def bind(self, **fields: Any) -> StructLogger:
        return StructLogger(self._ns, {**self._fields, **fields}, self._tid)

    def __repr__(self) -> str:
        return f"StructLogger(namespace={self._ns!r}, fields={sorted(self._fields)!r})"


_ROOT = StructLogger()


def get_logger(namespace: str | None = None) -> StructLogger:
    """A logger; with ``namespace`` its lines carry ``"namespace": namespace``."""
    return StructLogger(namespace) if namespace else _ROOT


def from_context(namespace: str | None = None) -> StructLogger:
    """A logger carrying the *current* trace id, kept even if used later in another context.

    (Lines from any logger carry the trace id bound at the time they are written; this one
    pins the id of the moment it was created, like the seed's ``FromContext(ctx)``.)
    """
    return StructLogger(namespace, None, trace_id())
