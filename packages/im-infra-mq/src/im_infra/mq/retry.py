"""Retry policy and dead-letter topic for consumer callbacks (beyond the seed)."""

from __future__ import annotations

from dataclasses import dataclass

from .message import Message

__all__ = ["DLQ_SUFFIX", "RetryPolicy", "dead_letter_message"]

#: A message that keeps failing on topic ``T`` goes to ``T + DLQ_SUFFIX``.
DLQ_SUFFIX = ".dlq"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a consumer treats a callback that raises.

    The callback is called up to ``max_attempts`` times, sleeping ``backoff`` seconds before the
    second attempt and multiplying the pause by ``multiplier`` (capped at ``max_backoff``) each
    time. When every attempt failed and ``dead_letter`` is true, the message is produced to
    ``<topic>.dlq`` with headers ``dlq_topic``/``dlq_partition``/``dlq_offset``/``dlq_error``; then
    its offset is stored and consumption continues. Retries hold up the message's partition, so
    keep the total pause well below ``max.poll.interval.ms`` (300 s by default).
    """

    max_attempts: int = 3
    backoff: float = 0.2
    multiplier: float = 2.0
    max_backoff: float = 5.0
    dead_letter: bool = True

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("RetryPolicy.max_attempts must be >= 1")
        if self.backoff < 0 or self.max_backoff < 0:
            raise ValueError("RetryPolicy backoff values must be >= 0")
        if self.multiplier < 1:
            raise ValueError("RetryPolicy.multiplier must be >= 1")

    def pause(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        return float(min(self.backoff * self.multiplier ** (attempt - 1), self.max_backoff))


def dead_letter_message(msg: Message, exc: BaseException) -> Message:
    """The message written to ``<topic>.dlq`` for ``msg`` whose callback kept failing with
    ``exc``: same key and value, its headers plus ``dlq_topic``/``dlq_partition``/
    ``dlq_offset``/``dlq_error``."""
    headers = dict(msg.headers)
    headers.update(
        {
            "dlq_topic": msg.topic.encode(),
            "dlq_partition": str(msg.partition).encode(),
            "dlq_offset": str(msg.offset).encode(),
            "dlq_error": f"{type(exc).__name__}: {exc}"[:1000].encode(),
        }
    )
    return Message(topic=msg.topic + DLQ_SUFFIX, key=msg.key, value=msg.value, headers=headers)
