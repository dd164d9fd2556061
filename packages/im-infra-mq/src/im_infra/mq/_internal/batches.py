"""What happens to a list handed to a batch callback (pure: the consumers drive it).

:func:`batch_flow` asks its driver to call the callback with a list, or to pause; it answers
which messages failed. Failed ones are retried as a smaller list under the
:class:`~im_infra.mq.RetryPolicy`; at the end it says whether the list is finished (its offsets
may be stored) and which messages failed every attempt (each then goes to its retry topic, the
dead-letter topic, or nowhere, as a single message would). The Kafka consumer (blocking and
asyncio) and the in-memory one share it.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence

from im_infra import clog
from im_infra.mq.batch import BatchFailure
from im_infra.mq.message import Message
from im_infra.mq.retry import RetryPolicy

__all__ = ["Ask", "Failed", "Outcome", "batch_flow", "failures", "log_failure"]

#: ``("call", messages)``: call the callback with them, send back :func:`failures` of the call
#: (None: abandoned, e.g. cancelled while closing). ``("pause", seconds)``: send back whether the
#: consumer is closing meanwhile.
Ask = tuple[str, object]
#: Index in the list -> the error of a failed message.
Failed = dict[int, Exception]
#: (finished, the messages that failed every attempt with their last error, attempts made).
Outcome = tuple[bool, list[tuple[Message, Exception]], int]

_TRACE_IDS_LOGGED = 20


def batch_flow(
    msgs: list[Message], retry: RetryPolicy | None
) -> Generator[Ask, Failed | bool | None, Outcome]:
    """The handling of one list; see the module docstring."""
    attempts = 1 if retry is None else retry.max_attempts
    pending, attempt = msgs, 1
    while True:
        failed = yield ("call", pending)
        if failed is None:
            return False, [], attempt
        assert isinstance(failed, dict)
        if not failed:
            return True, [], attempt
        still = [(pending[i], failed[i]) for i in sorted(failed)]
        if attempt >= attempts:
            return True, still, attempt
        assert retry is not None  # attempts > 1
        if (yield ("pause", retry.pause(attempt))):
            return False, [], attempt
        attempt += 1
        pending = [m for m, _ in still]


def failures(exc: Exception, count: int) -> Failed:
    """Which of ``count`` messages failed when the callback raised ``exc``: the ones a valid
    :class:`BatchFailure` names, else all of them."""
    if isinstance(exc, BatchFailure):
        named = exc.failed
        if named and all(type(i) is int and 0 <= i < count for i in named):
            return {i: e if isinstance(e, Exception) else exc for i, e in named.items()}
    return dict.fromkeys(range(count), exc)


def log_failure(
    log: clog.Logger, msgs: Sequence[Message], failed: Failed, attempt: int, attempts: int
) -> None:
    """One line per failed call (from inside the ``except`` clause, so it has the exception):
    how many failed, where, and their trace ids (a list has no single one)."""
    bad = [msgs[i] for i in sorted(failed)]
    trace_ids = list(dict.fromkeys(t for m in bad if (t := m.trace_id) is not None))
    log.exception(
        "batch callback failed",
        failed=len(bad),
        batch_size=len(msgs),
        topics=sorted({m.topic for m in bad}),
        attempt=attempt,
        max_attempts=attempts,
        trace_ids=trace_ids[:_TRACE_IDS_LOGGED],
    )
