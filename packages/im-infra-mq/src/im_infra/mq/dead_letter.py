"""Dead-letter messages: the headers that say where a message came from and why it failed.

A message that failed every attempt is produced to ``<topic>.dlq`` with its key, value and
headers plus:

========================== =========================================================
``dlq_original_topic``     the topic it was consumed from
``dlq_original_partition`` its partition there (decimal)
``dlq_original_offset``    its offset there (decimal)
``dlq_attempts``           how many times the callback was called (decimal)
``dlq_error``              ``<exception type>: <message>``, at most 1000 characters
========================== =========================================================

A message moved to a retry topic (``<topic>.retry.<delayMs>``, see :mod:`im_infra.mq.retry`)
carries the same headers plus ``retry_stage`` (how many retry topics it reached, decimal),
``retry_due_ms`` (Unix time in milliseconds before which it is not handled) and
``retry_group`` (the consumer group it failed in: every group consuming the source topic reads
its retry topics and skips the other groups' messages). When it fails
again there, the original topic, partition and offset stay those of the first failure and
``dlq_attempts`` counts every call of the callback, on every topic.

im-infra-mq 0.1 wrote the source topic as ``dlq_topic`` (a misleading name: it is not the
dead-letter topic) and partition/offset as ``dlq_partition``/``dlq_offset``. For one version
(0.2) those old headers are still written beside the new ones, and :func:`read_dead_letter` reads
either; they go in 0.3.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .errors import MQError
from .message import Message
from .retry import retry_source

__all__ = [
    "ATTEMPTS_HEADER",
    "ERROR_HEADER",
    "ORIGINAL_OFFSET_HEADER",
    "ORIGINAL_PARTITION_HEADER",
    "ORIGINAL_TOPIC_HEADER",
    "RETRY_DUE_HEADER",
    "RETRY_GROUP_HEADER",
    "RETRY_STAGE_HEADER",
    "DeadLetter",
    "dead_letter_headers",
    "read_dead_letter",
    "retry_due_ms",
    "retry_group",
    "retry_headers",
    "retry_stage",
]

ORIGINAL_TOPIC_HEADER = "dlq_original_topic"
ORIGINAL_PARTITION_HEADER = "dlq_original_partition"
ORIGINAL_OFFSET_HEADER = "dlq_original_offset"
ATTEMPTS_HEADER = "dlq_attempts"
ERROR_HEADER = "dlq_error"
RETRY_STAGE_HEADER = "retry_stage"
RETRY_DUE_HEADER = "retry_due_ms"
RETRY_GROUP_HEADER = "retry_group"

#: The names 0.1 wrote (new name -> old name); still written and read in 0.2, gone in 0.3.
_DEPRECATED = {
    ORIGINAL_TOPIC_HEADER: "dlq_topic",
    ORIGINAL_PARTITION_HEADER: "dlq_partition",
    ORIGINAL_OFFSET_HEADER: "dlq_offset",
}
_MAX_ERROR = 1000


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """What a dead-letter message's headers say about the original message."""

    original_topic: str
    original_partition: int
    original_offset: int
    attempts: int | None  # None on messages dead-lettered by 0.1
    error: str


def dead_letter_headers(msg: Message, exc: BaseException, attempts: int) -> dict[str, bytes]:
    """The headers of ``msg``'s dead letter: its own headers plus the ones above.

    ``attempts``: the callback's calls on ``msg`` (those on earlier topics are added when
    ``msg`` comes from a retry topic)."""
    headers = _forwarded(msg, exc, attempts)
    headers.pop(RETRY_DUE_HEADER, None)
    return headers


def retry_headers(
    msg: Message, exc: BaseException, attempts: int, stage: int, due_ms: int, group: str
) -> dict[str, bytes]:
    """The headers of ``msg`` moved to its retry topic number ``stage`` (1-based) by consumer
    group ``group``, due at ``due_ms`` (Unix milliseconds)."""
    headers = _forwarded(msg, exc, attempts)
    headers[RETRY_STAGE_HEADER] = str(stage).encode()
    headers[RETRY_DUE_HEADER] = str(due_ms).encode()
    headers[RETRY_GROUP_HEADER] = group.encode()
    return headers


def retry_stage(msg: Message) -> int:
    """How many retry topics ``msg`` went through (0 for a message not from a retry topic)."""
    if not _from_retry_topic(msg):
        return 0
    return _number(msg.headers.get(RETRY_STAGE_HEADER)) or 0


def retry_due_ms(msg: Message) -> int | None:
    """When ``msg``, read from a retry topic, may be handled (Unix ms); None: at once."""
    return _number(msg.headers.get(RETRY_DUE_HEADER)) if _from_retry_topic(msg) else None


def retry_group(msg: Message) -> str | None:
    """The consumer group that moved ``msg``, read from a retry topic, there (None: unknown,
    every group handles it)."""
    raw = msg.headers.get(RETRY_GROUP_HEADER) if _from_retry_topic(msg) else None
    return None if raw is None else raw.decode("utf-8", "replace")


def _from_retry_topic(msg: Message) -> bool:
    return RETRY_STAGE_HEADER in msg.headers and retry_source(msg.topic) is not None


def _number(raw: bytes | None) -> int | None:
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        return None


def _forwarded(msg: Message, exc: BaseException, attempts: int) -> dict[str, bytes]:
    """``msg``'s headers plus the origin and failure headers. From a retry topic, the origin
    stays the first failure's and earlier attempts are added; a message replayed to a source
    topic starts afresh."""
    headers = dict(msg.headers)
    origin = msg.headers if _from_retry_topic(msg) else None
    prior = 0 if origin is None else _number(origin.get(ATTEMPTS_HEADER)) or 0
    added = {
        ORIGINAL_TOPIC_HEADER: msg.topic.encode(),
        ORIGINAL_PARTITION_HEADER: str(msg.partition).encode(),
        ORIGINAL_OFFSET_HEADER: str(msg.offset).encode(),
    }
    if origin is not None:
        for name in added:
            kept = _get(origin, name)
            if kept is not None:
                added[name] = kept
    added[ATTEMPTS_HEADER] = str(prior + attempts).encode()
    added[ERROR_HEADER] = f"{type(exc).__name__}: {exc}"[:_MAX_ERROR].encode()
    headers.update(added)
    for new, old in _DEPRECATED.items():
        headers[old] = added[new]
    return headers


def read_dead_letter(msg: Message) -> DeadLetter:
    """Parse a dead-letter message's headers (new names first, then 0.1's).

    Raises :class:`MQError` naming the header when one is missing or malformed.
    """
    headers = msg.headers

    def text(name: str) -> str:
        raw = _get(headers, name)
        if raw is None:
            raise MQError(f"message at offset {msg.offset} of {msg.topic!r} has no {name} header")
        return raw.decode("utf-8", "replace")

    def number(name: str) -> int:
        value = text(name)
        try:
            return int(value)
        except ValueError:
            raise MQError(f"header {name} is not a number: {value[:40]!r}") from None

    attempts = number(ATTEMPTS_HEADER) if ATTEMPTS_HEADER in headers else None
    return DeadLetter(
        original_topic=text(ORIGINAL_TOPIC_HEADER),
        original_partition=number(ORIGINAL_PARTITION_HEADER),
        original_offset=number(ORIGINAL_OFFSET_HEADER),
        attempts=attempts,
        error=text(ERROR_HEADER),
    )


def _get(headers: Mapping[str, bytes], name: str) -> bytes | None:
    value = headers.get(name)
    if value is None and name in _DEPRECATED:
        value = headers.get(_DEPRECATED[name])
    return value
