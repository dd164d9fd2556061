"""W3C trace-context propagation through message headers (OpenTelemetry API only).

The producer injects ``traceparent`` (and ``tracestate``/``baggage`` when present) while a valid
span is active; the consumer extracts them and attaches the context around the callback, so the
spans the handler starts are children of the producer's span. Without an active span (always
the case without an SDK, unless a propagated context was attached) nothing is added.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from opentelemetry import context as otel_context
from opentelemetry import propagate
from opentelemetry import trace as otel_trace

from im_infra import clog
from im_infra.mq.message import TRACE_ID_HEADER

__all__ = [
    "TRACEPARENT_HEADER",
    "bound_from",
    "current_trace_headers",
    "extract_context",
    "inject_headers",
]

TRACEPARENT_HEADER = "traceparent"
_CARRIED = ("traceparent", "tracestate", "baggage")

_get_current = otel_context.get_current
_get_current_span = otel_trace.get_current_span


def inject_headers() -> dict[str, str] | None:
    """The propagation headers of the active span, or None when no valid span is active."""
    ctx = _get_current()
    if not ctx:  # nothing attached: the common case without tracing
        return None
    if not _get_current_span(ctx).get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    propagate.inject(carrier, ctx)
    return carrier or None


def extract_context(headers: Mapping[str, bytes]) -> otel_context.Context | None:
    """The context carried by a message's headers, or None when it has no ``traceparent``."""
    if TRACEPARENT_HEADER not in headers:
        return None
    carrier = {k: headers[k].decode("latin-1") for k in _CARRIED if k in headers}
    return propagate.extract(carrier)


#: Producer headers as confluent-kafka takes them.
Headers = dict[str, str | bytes | None]


def current_trace_headers() -> tuple[str | None, Headers | None]:
    """The current clog trace id, and the headers a producer adds for it: ``trace_id`` plus the
    active span's W3C context (None without a trace id)."""
    tid = clog.trace_id()
    if tid is None:
        return None, None
    headers: Headers = {TRACE_ID_HEADER: tid.encode()}
    propagation = inject_headers()
    if propagation:
        headers.update((k, v.encode()) for k, v in propagation.items())
    return tid, headers


@contextmanager
def bound_from(headers: Mapping[str, bytes]) -> Iterator[None]:
    """Bind a consumed message's ``trace_id`` header as the clog trace id and attach its W3C
    trace context (when present) for the duration of the block; restore both afterwards.

    Works around a blocking call and around an ``await`` inside one asyncio task alike.
    """
    raw_tid = headers.get(TRACE_ID_HEADER)
    parent = extract_context(headers) if headers else None
    token = clog.set_trace_id(raw_tid.decode("utf-8", "replace")) if raw_tid else None
    otel_token = otel_context.attach(parent) if parent is not None else None
    try:
        yield
    finally:
        if otel_token is not None:
            otel_context.detach(otel_token)
        if token is not None:
            clog.reset_trace_id(token)
