"""Retry policy and dead-letter topic for consumer callbacks (beyond the seed)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DLQ_SUFFIX", "RetryPolicy"]

#: A message that keeps failing on topic ``T`` goes to ``T + DLQ_SUFFIX``.
DLQ_SUFFIX = ".dlq"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a consumer treats a callback that raises.

    The callback is called up to ``max_attempts`` times, sleeping ``backoff`` seconds before the
    second attempt and multiplying the pause by ``multiplier`` (capped at ``max_backoff``) each
    time. When every attempt failed and ``dead_letter`` is true, the message is produced to
    ``<topic>.dlq`` with the headers of :mod:`im_infra.mq.dead_letter` (original topic, partition,
    offset, attempt count, error); then
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
