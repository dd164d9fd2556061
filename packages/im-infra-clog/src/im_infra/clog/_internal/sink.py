"""Where lines go: one stream, one lock, shared by clog's loggers and loguru's handler."""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, Protocol

from im_infra.clog._internal.otel import active_span_ids
from im_infra.clog._internal.render import Renderer
from im_infra.clog.context import _TRACE_ID


def current_ids(pinned: str | None) -> tuple[str | None, str | None]:
    """``(trace_id, span_id)`` for a line: the ``pinned`` id (``from_context``) wins over the
    bound one, which wins over the active OpenTelemetry span's; ``span_id`` is the active
    span's whenever one is active."""
    tid = pinned or _TRACE_ID.get()
    span = active_span_ids()
    if span is None:
        return tid, None
    return tid or span[0], span[1]


class TextStream(Protocol):
    """What ``clog.init(sink=...)`` accepts: a text stream with ``write`` and ``flush``."""

    def write(self, text: str, /) -> object: ...

    def flush(self) -> object: ...


class Sink:
    """Writes rendered lines to ``stream`` (default: the current ``sys.stdout``), one flush
    per line so a crash loses nothing already logged."""

    def __init__(self, renderer: Renderer, stream: TextStream | None) -> None:
        self.renderer = renderer
        self._stream = stream
        self._lock = threading.Lock()

    def write_line(self, line: str) -> None:
        stream = self._stream if self._stream is not None else sys.stdout
        with self._lock:
            stream.write(line + "\n")
            stream.flush()

    def emit(
        self,
        level: str,
        msg: str,
        namespace: str | None,
        trace_id: str | None,
        fields: dict[str, Any],
        exc: tuple[Any, BaseException | None, Any] | None = None,
    ) -> None:
        """The direct path of clog's own loggers (no loguru record is built).

        ``trace_id`` (pinned by ``from_context``) wins over the bound id, which wins over the
        active OpenTelemetry span's; ``span_id`` is written whenever a span is active.
        """
        tid, span_id = current_ids(trace_id)
        line = self.renderer.line(
            time.time(), level, msg, namespace, tid, fields, exc, span_id=span_id
        )
        self.write_line(line)

    def loguru_write(self, message: Any) -> None:
        """The loguru sink: stdlib records and loguru-native calls arrive here."""
        tid, span_id = current_ids(None)
        self.write_line(self.renderer.record_line(message.record, tid, span_id))
