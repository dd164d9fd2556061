"""The thin confluent-kafka adapter of the producer: the only module that builds or calls a
``confluent_kafka.Producer``.

:class:`RdkProducer` exposes exactly what the producer core uses: ``produce`` (positional, the
cheapest call confluent-kafka offers), ``poll``, ``flush``, ``purge``, ``len`` and ``close``, plus
:func:`fatal_of` to read a fatal error out of an exception. No policy lives here: back-pressure,
replacement after a fatal error and delivery reporting are the core's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

import confluent_kafka
from confluent_kafka import KafkaError, KafkaException

from im_infra import clog

from .client import build_client
from .delivery import is_fatal

__all__ = ["RdkProducer", "error_of", "fatal_of", "open_producer"]


class _Client(Protocol):
    """What the adapter needs of ``confluent_kafka.Producer`` (a test may hand a stand-in)."""

    def produce(self, *args: Any) -> None: ...
    def poll(self, timeout: float) -> int: ...
    def flush(self, timeout: float) -> int: ...
    def purge(self, *, in_queue: bool, in_flight: bool, blocking: bool) -> None: ...
    def __len__(self) -> int: ...


class RdkProducer:
    """One librdkafka producer.

    ``produce`` is confluent-kafka's own bound method (no Python frame on the send path), called
    positionally, the cheapest form: ``produce(topic, value, key, partition, report)``, or with
    headers ``produce(topic, value, key, partition, report, None, 0, headers)`` (an explicit
    ``headers=None`` costs confluent-kafka a header conversion, ~0.2 us; partition -1: the
    partitioner decides; timestamp 0: now). It raises ``BufferError`` when the local queue is
    full and ``KafkaException`` / ``TypeError`` / ``ValueError`` as confluent-kafka does; the
    core turns those into mq's errors.
    """

    __slots__ = ("_client", "poll", "produce")

    def __init__(self, client: _Client) -> None:
        self._client = client
        #: Queue one message (see the class docstring for the argument order).
        self.produce: Callable[..., None] = client.produce
        #: Serve delivery reports and client errors for up to ``timeout`` seconds.
        self.poll: Callable[[float], int] = client.poll

    def flush(self, timeout: float) -> int:
        """Serve reports until nothing is queued or ``timeout`` passed (-1: no limit); return
        how many messages remain."""
        return int(self._client.flush(timeout))

    def purge(self, *, in_flight: bool, blocking: bool) -> None:
        """Fail queued (and, with ``in_flight``, sent but unacknowledged) messages: each is
        reported by a later poll with ``_PURGE_QUEUE`` / ``_PURGE_INFLIGHT``."""
        self._client.purge(in_queue=True, in_flight=in_flight, blocking=blocking)

    def __len__(self) -> int:
        """Messages queued or in flight."""
        return len(self._client)

    def close(self) -> None:
        """Release the librdkafka handle (after the last flush)."""
        close = getattr(self._client, "close", None)
        if close is not None:
            close()


def open_producer(
    properties: Mapping[str, Any], log: clog.Logger
) -> tuple[RdkProducer, dict[str, Any]]:
    """A librdkafka producer from ready ``properties`` (their ``error_cb`` included) and the
    properties with secrets masked; a rejected configuration is a ConfigError."""
    client, masked = build_client(confluent_kafka.Producer, "producer", properties, log)
    return RdkProducer(client), masked


def error_of(exc: KafkaException) -> KafkaError | None:
    """The KafkaError a confluent-kafka exception carries, if any."""
    err = exc.args[0] if exc.args else None
    return err if isinstance(err, KafkaError) else None


def fatal_of(exc: KafkaException) -> KafkaError | None:
    """The fatal error ``exc`` carries (its librdkafka producer is dead for good), else None."""
    err = error_of(exc)
    return err if err is not None and is_fatal(err) else None
