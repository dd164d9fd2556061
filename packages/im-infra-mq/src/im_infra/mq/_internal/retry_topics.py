"""Where a failed message goes next: its next retry topic, the dead-letter topic, or nowhere.

Pure (no I/O): the Kafka consumer and the in-memory one (``im_infra.mq.testing``) both ask
:func:`next_hop` after a message's last in-place attempt failed, and produce what it returns.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from im_infra.mq.config import RetryTopicsConfig
from im_infra.mq.dead_letter import dead_letter_headers, retry_headers, retry_stage
from im_infra.mq.message import Message
from im_infra.mq.retry import DLQ_SUFFIX, retry_source, retry_topic

__all__ = ["Hop", "forwards", "next_hop", "subscription"]


@dataclass(frozen=True, slots=True)
class Hop:
    """The message to produce; ``delay_ms`` is None for the dead-letter topic."""

    message: Message
    delay_ms: int | None


def forwards(msg: Message, topics: RetryTopicsConfig) -> bool:
    """Whether a failure of ``msg`` is forwarded (retry topics on, or ``msg`` read from one:
    it finishes its way to the dead-letter topic after retry topics were turned off)."""
    return topics.enabled or retry_stage(msg) > 0


def next_hop(
    msg: Message,
    exc: BaseException,
    attempts: int,
    topics: RetryTopicsConfig,
    policy_dead_letter: bool,
    group: str,
    now_ms: int | None = None,
) -> Hop | None:
    """Where ``msg`` goes after ``attempts`` failed calls in consumer group ``group``, ``exc``
    the last error.

    With retry topics on, stage ``n`` (0 on a source topic) goes to the retry topic of the
    ``n``-th delay of the *current* ``topics`` (so a live change applies to later failures),
    past the last one to the dead-letter topic when ``topics.dead_letter``. Without retry topics
    the :class:`~im_infra.mq.RetryPolicy`'s ``dead_letter`` (``policy_dead_letter``) decides.
    """
    stage = retry_stage(msg)
    source = retry_source(msg.topic) if stage else msg.topic
    assert source is not None  # retry_stage() > 0 only on a retry topic
    delays = topics.delays_ms
    if stage < len(delays):
        delay = delays[stage]
        now = int(time.time() * 1000) if now_ms is None else now_ms
        headers = retry_headers(msg, exc, attempts, stage + 1, now + delay, group)
        return Hop(Message(retry_topic(source, delay), msg.key, msg.value, headers), delay)
    if topics.dead_letter if (topics.enabled or stage) else policy_dead_letter:
        headers = dead_letter_headers(msg, exc, attempts)
        return Hop(Message(source + DLQ_SUFFIX, msg.key, msg.value, headers), None)
    return None


def subscription(sources: Sequence[str], topics: RetryTopicsConfig) -> list[str]:
    """The retry topics of ``sources`` for the delays of ``topics`` (each once, in order)."""
    out: list[str] = []
    for source in sources:
        for delay in topics.delays_ms:
            name = retry_topic(source, delay)
            if name not in out:
                out.append(name)
    return out
