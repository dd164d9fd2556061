"""The hook behind :func:`im_infra.clog.testing.capture_logs`: active captures and recording.

Kept apart from the logger so the hot path pays one attribute read (``ACTIVE.on``) when nothing
is being captured.
"""

from __future__ import annotations

import threading
from typing import Any

from im_infra.clog._internal.render import DEFAULT_REDACT, Redactor, error_object
from im_infra.clog._internal.state import STATE
from im_infra.clog.context import trace_id as current_trace_id


class Active:
    """The captures in progress (a capture is a list that receives records)."""

    def __init__(self) -> None:
        self.on = False
        #: Lines are also written as usual (some active capture asked for it).
        self.passthrough = False
        self.lock = threading.Lock()
        self.sinks: list[tuple[list[dict[str, Any]], bool]] = []

    def add(self, sink: list[dict[str, Any]], passthrough: bool) -> None:
        with self.lock:
            self.sinks.append((sink, passthrough))
            self._update()

    def remove(self, sink: list[dict[str, Any]]) -> None:
        with self.lock:
            self.sinks = [s for s in self.sinks if s[0] is not sink]
            self._update()

    def _update(self) -> None:
        self.passthrough = any(p for _, p in self.sinks)
        self.on = bool(self.sinks)


ACTIVE = Active()
_DEFAULT_REDACTOR = Redactor(DEFAULT_REDACT)


def record(
    level: str,
    msg: str,
    namespace: str | None,
    pinned: str | None,
    fields: dict[str, Any],
    exc: tuple[Any, BaseException | None, Any] | None,
) -> None:
    """Append one structured record to every active capture.

    The trace id follows the output's rule (an explicit ``trace_id=`` field wins, then the id
    pinned by ``from_context``, then the bound one); secret fields are redacted as in the output.
    """
    fields = dict(fields)
    explicit = fields.pop("trace_id", None)
    tid = str(explicit) if explicit is not None else pinned or current_trace_id()
    direct = STATE.direct
    redactor = direct.renderer.redactor if direct is not None else _DEFAULT_REDACTOR
    rec: dict[str, Any] = {
        "level": level,
        "msg": msg,
        "service": (STATE.service or None) if STATE.configured else None,
        "namespace": namespace,
        "trace_id": tid,
        "fields": redactor.clean(fields),
    }
    if exc is not None:
        rec["error"] = error_object(*exc)
    with ACTIVE.lock:
        for sink, _ in ACTIVE.sinks:
            sink.append(rec)
