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

__all__ = [
    "ATTEMPTS_HEADER",
    "ERROR_HEADER",
    "ORIGINAL_OFFSET_HEADER",
    "ORIGINAL_PARTITION_HEADER",
    "ORIGINAL_TOPIC_HEADER",
    "DeadLetter",
    "dead_letter_headers",
    "read_dead_letter",
]

ORIGINAL_TOPIC_HEADER = "dlq_original_topic"
ORIGINAL_PARTITION_HEADER = "dlq_original_partition"
ORIGINAL_OFFSET_HEADER = "dlq_original_offset"
ATTEMPTS_HEADER = "dlq_attempts"
ERROR_HEADER = "dlq_error"

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
    """The headers of ``msg``'s dead letter: its own headers plus the ones above."""
    headers = dict(msg.headers)
    added = {
        ORIGINAL_TOPIC_HEADER: msg.topic.encode(),
        ORIGINAL_PARTITION_HEADER: str(msg.partition).encode(),
        ORIGINAL_OFFSET_HEADER: str(msg.offset).encode(),
        ATTEMPTS_HEADER: str(attempts).encode(),
        ERROR_HEADER: f"{type(exc).__name__}: {exc}"[:_MAX_ERROR].encode(),
    }
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
