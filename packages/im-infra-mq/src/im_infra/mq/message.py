"""The cross-service message (seed §2 ``Message``)."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["TRACE_ID_HEADER", "Message"]

#: Header carrying the clog trace id from producer to consumer.
TRACE_ID_HEADER = "trace_id"


@dataclass(slots=True, init=False)
class Message:
    """A Kafka message.

    ``key`` selects the partition (same key, same partition). ``headers`` carries metadata such as
    ``trace_id``. ``str`` keys and values are encoded as UTF-8 when sent. The last three fields are
    filled in by the consumer (``None`` on messages you build to send).
    """

    topic: str
    key: bytes | str | None = None
    value: bytes | str | None = None
    headers: dict[str, bytes] = field(default_factory=dict)
    partition: int | None = None
    offset: int | None = None
    timestamp_ms: int | None = None

    def __init__(
        self,
        topic: str,
        key: bytes | str | None = None,
        value: bytes | str | None = None,
        headers: dict[str, bytes] | None = None,
        partition: int | None = None,
        offset: int | None = None,
        timestamp_ms: int | None = None,
    ) -> None:
        # Written out instead of generated: an empty headers dict from a literal, not from the
        # default factory (a type call): ~300 fewer instructions per message built (~6 %).
        self.topic = topic
        self.key = key
        self.value = value
        self.headers = {} if headers is None else headers
        self.partition = partition
        self.offset = offset
        self.timestamp_ms = timestamp_ms

    @property
    def trace_id(self) -> str | None:
        """The ``trace_id`` header decoded as text, or ``None``."""
        raw = self.headers.get(TRACE_ID_HEADER)
        if not raw:
            return None
        return raw.decode("utf-8", errors="replace")
