"""The trace id, carried in a :class:`contextvars.ContextVar`, or taken from OpenTelemetry.

Precedence: a trace id bound with :func:`set_trace_id` / :func:`trace_context` (or pinned by
:func:`~im_infra.clog.from_context`) wins; otherwise, when an OpenTelemetry span is active, its
trace id (32 hex) is used; otherwise there is none. An explicit binding is a deliberate act of
the caller (an id received from upstream without OpenTelemetry, say), so it is never overridden.

The bound id follows the current context: asyncio tasks copy it when they are created and
threads see it when started through :func:`contextvars.copy_context`. It is the Python form of Go's
``context.Context`` value that the seed's ``SetTraceID(ctx, id)`` stores.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator

from im_infra.clog._internal.otel import active_span_ids

__all__ = ["new_trace_id", "reset_trace_id", "set_trace_id", "trace_context", "trace_id"]

_TRACE_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "im_infra_trace_id", default=None
)

MAX_TRACE_ID_LEN = 128


def new_trace_id() -> str:
    """A new random trace id: 32 lowercase hex characters (the W3C trace-id format)."""
    return os.urandom(16).hex()


def _check(tid: str) -> str:
    if not isinstance(tid, str) or not tid or len(tid) > MAX_TRACE_ID_LEN:
        raise ValueError(
            f"trace id must be a non-empty str of at most {MAX_TRACE_ID_LEN} chars, got {tid!r}"
        )
    return tid


def set_trace_id(tid: str) -> contextvars.Token[str | None]:
    """Bind ``tid`` as the current trace id; returns a token for :func:`reset_trace_id`."""
    return _TRACE_ID.set(_check(tid))


def reset_trace_id(token: contextvars.Token[str | None]) -> None:
    """Restore the trace id that was current before the matching :func:`set_trace_id`."""
    _TRACE_ID.reset(token)


def trace_id() -> str | None:
    """The current trace id: the bound one, else the active OpenTelemetry span's, else None."""
    tid = _TRACE_ID.get()
    if tid is not None:
        return tid
    span = active_span_ids()
    return None if span is None else span[0]


@contextlib.contextmanager
def trace_context(tid: str | None = None) -> Iterator[str]:
    """Bind a trace id for the ``with`` block, then restore.

    With ``tid`` None the id is the active OpenTelemetry span's trace id when a span is active
    (so the block's lines still match the trace), else a new random one.

    >>> with trace_context("abc") as tid:
    ...     assert trace_id() == tid == "abc"
    """
    if tid is None:
        span = active_span_ids()
        tid = new_trace_id() if span is None else span[0]
    token = _TRACE_ID.set(_check(tid))
    try:
        yield _TRACE_ID.get() or ""
    finally:
        _TRACE_ID.reset(token)
