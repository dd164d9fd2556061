"""The active OpenTelemetry span, read through the OpenTelemetry API only.

Without an SDK (and without a context attached by a propagator) the API's current context is
empty, so the lookup costs one context-variable read and an emptiness check per line.
"""

from __future__ import annotations

from opentelemetry import context as _otel_context
from opentelemetry import trace as _otel_trace

__all__ = ["active_span_ids"]

_get_current = _otel_context.get_current
_get_current_span = _otel_trace.get_current_span
#: The last span context seen and its hex ids: lines written in one span format them once.
_last: tuple[object, tuple[str, str] | None] = (None, None)


def active_span_ids() -> tuple[str, str] | None:
    """``(trace_id, span_id)`` of the active span as 32 and 16 lowercase hex characters, or
    ``None`` when no valid span is active."""
    ctx = _get_current()
    if not ctx:  # nothing attached at all: the common case without tracing
        return None
    global _last
    sc = _get_current_span(ctx).get_span_context()
    last_sc, last_ids = _last  # one read: another thread may replace it meanwhile
    if sc is last_sc:
        return last_ids
    ids = (format(sc.trace_id, "032x"), format(sc.span_id, "016x")) if sc.is_valid else None
    _last = (sc, ids)
    return ids
