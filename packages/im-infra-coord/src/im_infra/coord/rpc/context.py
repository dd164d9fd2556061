"""What travels with a call: the trace id, the W3C trace context and the deadline.

Client side, :func:`outgoing_metadata` adds ``x-trace-id`` (the current clog trace id) and, while
an OpenTelemetry span is active, ``traceparent``/``tracestate``/``baggage``. Server side,
:func:`bind_incoming` (used by :class:`~im_infra.coord.rpc.TraceServerInterceptor`) binds them
for the handler and records the call's deadline, so a handler's own calls through a balanced
channel inherit what is left of it (Go's ``context.Context`` deadline, in a contextvar).
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Iterable, Iterator, Sequence

from opentelemetry import context as otel_context
from opentelemetry import propagate
from opentelemetry import trace as otel_trace

from im_infra import clog

__all__ = [
    "TRACE_ID_METADATA",
    "bind_incoming",
    "deadline",
    "inherited_timeout",
    "outgoing_metadata",
]

#: The metadata key carrying the clog trace id.
TRACE_ID_METADATA = "x-trace-id"
_W3C = ("traceparent", "tracestate", "baggage")

Metadata = tuple[tuple[str, str | bytes], ...]

#: grpc reports "no deadline" as a time remaining of years: treat anything above as none.
_NO_DEADLINE = 1e7

_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "im_infra_coord_rpc_deadline", default=None
)


def inherited_timeout() -> float | None:
    """Seconds left of the deadline bound by :func:`deadline` or by the server interceptor
    around the current handler (None: no deadline; may be <= 0 when it has passed)."""
    at = _DEADLINE.get()
    return None if at is None else at - time.monotonic()


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Bound every balanced-channel call made in the block to ``seconds`` from now (nested
    bounds keep the earlier deadline)."""
    at = time.monotonic() + seconds
    outer = _DEADLINE.get()
    token = _DEADLINE.set(at if outer is None else min(at, outer))
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def _has(metadata: Sequence[tuple[str, str | bytes]], key: str) -> bool:
    return any(k == key for k, _ in metadata)


def outgoing_metadata(metadata: Iterable[tuple[str, str | bytes]] | None) -> Metadata | None:
    """``metadata`` plus the trace id and W3C trace context, unless the caller set them."""
    if metadata is not None and not isinstance(metadata, tuple):
        metadata = tuple(metadata)
    tid = clog.trace_id()
    ctx = otel_context.get_current()
    traced = bool(ctx) and otel_trace.get_current_span(ctx).get_span_context().is_valid
    if tid is None and not traced:
        return metadata
    extra: list[tuple[str, str | bytes]] = []
    base = metadata or ()
    if tid is not None and not _has(base, TRACE_ID_METADATA):
        extra.append((TRACE_ID_METADATA, tid))
    if traced and not _has(base, "traceparent"):
        carrier: dict[str, str] = {}
        propagate.inject(carrier, ctx)
        extra.extend((k, v) for k, v in carrier.items() if k in _W3C)
    return base + tuple(extra) if extra else metadata


@contextlib.contextmanager
def bind_incoming(
    metadata: Iterable[tuple[str, str | bytes]] | None, time_remaining: float | None
) -> Iterator[None]:
    """Bind an incoming call's trace id (clog), W3C context (OpenTelemetry) and deadline for
    the handler's duration."""
    tid: str | None = None
    carrier: dict[str, str] = {}
    for key, value in metadata or ():
        if key == TRACE_ID_METADATA:
            tid = value if isinstance(value, str) else value.decode("utf-8", "replace")
        elif key in _W3C:
            carrier[key] = value if isinstance(value, str) else value.decode("latin-1")
    tid_token = None
    if tid:
        with contextlib.suppress(ValueError):  # an over-long id from a caller is not bound
            tid_token = clog.set_trace_id(tid)
    otel_token = otel_context.attach(propagate.extract(carrier)) if carrier else None
    dl_token = None
    if time_remaining is not None and time_remaining < _NO_DEADLINE:
        dl_token = _DEADLINE.set(time.monotonic() + time_remaining)
    try:
        yield
    finally:
        if dl_token is not None:
            _DEADLINE.reset(dl_token)
        if otel_token is not None:
            otel_context.detach(otel_token)
        if tid_token is not None:
            clog.reset_trace_id(tid_token)
