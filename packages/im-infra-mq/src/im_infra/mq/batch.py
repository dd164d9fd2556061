"""Batch handlers: ``subscribe_batch(topics, callback, max_messages=..., max_wait=...)``.

The callback gets a list of messages (up to ``max_messages``, gathered for up to ``max_wait``
seconds). Offsets are stored only after it returned for the whole list. When it raises, every
message of the list has failed; raising :class:`BatchFailure` names the ones that did (the others
are finished). Failed messages are retried *as a smaller list* under the consumer's
:class:`~im_infra.mq.RetryPolicy`, then each goes its own way: its retry topic, the dead-letter
topic, or logged and skipped (as a single message would).

A list has no single trace id, so none is bound around the call: each message carries its own
(``msg.trace_id``) and ``with mq.message_trace(msg):`` binds it (and its W3C trace context)
around the work done for that message.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager

from ._internal.tracing import bound_from
from .errors import ConfigError
from .message import Message

__all__ = [
    "AsyncBatchCallback",
    "BatchCallback",
    "BatchFailure",
    "check_batch_limits",
    "message_trace",
]

#: Handles a list of consumed messages; raising (or returning an exception) fails them all,
#: raising :class:`BatchFailure` fails some.
BatchCallback = Callable[[list[Message]], object]
#: The asyncio form of :data:`BatchCallback`.
AsyncBatchCallback = Callable[[list[Message]], Awaitable[object]]

#: Bounds of ``subscribe_batch``'s arguments.
MAX_BATCH_MESSAGES = 100_000
MAX_BATCH_WAIT_S = 60.0


class BatchFailure(Exception):  # noqa: N818 - it is raised to report failures, like an error
    """Raised by a batch callback to fail only some messages of its list.

    ``failed`` maps the index of each failed message in the list the callback got to its
    error; the other messages count as handled.
    """

    def __init__(self, failed: Mapping[int, BaseException], message: str = "") -> None:
        self.failed = dict(failed)
        super().__init__(message or f"{len(self.failed)} message(s) of the batch failed")


@contextmanager
def message_trace(msg: Message) -> Iterator[None]:
    """Bind ``msg``'s ``trace_id`` in clog and attach its W3C trace context while inside."""
    with bound_from(msg.headers):
        yield


def check_batch_limits(max_messages: int, max_wait: float) -> None:
    """Raise :class:`ConfigError` naming a bad ``max_messages`` / ``max_wait``."""
    if type(max_messages) is not int or not 1 <= max_messages <= MAX_BATCH_MESSAGES:
        raise ConfigError(
            f"max_messages must be an int from 1 to {MAX_BATCH_MESSAGES}, got {max_messages!r}"
        )
    if (
        isinstance(max_wait, bool)
        or not isinstance(max_wait, int | float)
        or not 0 <= max_wait <= MAX_BATCH_WAIT_S
    ):
        raise ConfigError(
            f"max_wait must be seconds from 0 to {MAX_BATCH_WAIT_S:g}, got {max_wait!r}"
        )
