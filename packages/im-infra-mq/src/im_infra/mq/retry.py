"""Retry policy, retry topics and dead-letter topic for consumer callbacks (beyond the seed).

Two kinds of retries, which combine:

- *blocking* (:class:`RetryPolicy`, a keyword argument): the callback is called again after a
  pause, in place; the message's partition waits;
- *non-blocking* (``consumer.retryTopics`` in kafka.yaml, applied live): a message that failed
  moves to a retry topic and the partition goes on at once. The retry topic of source topic
  ``T`` and delay ``D`` milliseconds is ``T.retry.D`` (:func:`retry_topic`); the consumer
  subscribes to the retry topics of its topics too and handles a message there no earlier than
  its due time (the partition is paused until then). After the last delay the message goes to
  ``T.dlq``. Topic names ending in ``.retry.<digits>`` are reserved for this.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["DLQ_SUFFIX", "RETRY_INFIX", "RetryPolicy", "retry_source", "retry_topic"]

#: A message that keeps failing on topic ``T`` goes to ``T + DLQ_SUFFIX``.
DLQ_SUFFIX = ".dlq"
#: The retry topic of ``T`` for a delay of ``D`` ms is ``T + RETRY_INFIX + str(D)``.
RETRY_INFIX = ".retry."
_RETRY_TOPIC = re.compile(r"^(.+)\.retry\.([0-9]+)$")


def retry_topic(topic: str, delay_ms: int) -> str:
    """The retry topic of ``topic`` for a delay of ``delay_ms`` milliseconds."""
    return f"{topic}{RETRY_INFIX}{delay_ms}"


def retry_source(topic: str) -> str | None:
    """The source topic when ``topic`` is a retry topic (named by :func:`retry_topic`)."""
    match = _RETRY_TOPIC.match(topic)
    return None if match is None else match.group(1)


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
