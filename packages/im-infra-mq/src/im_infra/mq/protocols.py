"""The seed's interfaces as ``typing.Protocol``s: business code types against these."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

from .admin_types import TopicInfo
from .batch import AsyncBatchCallback, BatchCallback
from .errors import MQError
from .message import Message

__all__ = [
    "AdminClient",
    "AsyncConsumeCallback",
    "AsyncConsumer",
    "AsyncProducer",
    "ConsumeCallback",
    "Consumer",
    "DeliveryCallback",
    "Producer",
]

#: Called once per message with ``None`` (delivered) or the :class:`MQError` describing the failure.
DeliveryCallback = Callable[[MQError | None], object]
#: Handles one consumed message; raising an exception marks the message as failed.
ConsumeCallback = Callable[[Message], object]
#: The asyncio form of :data:`ConsumeCallback`.
AsyncConsumeCallback = Callable[[Message], Awaitable[object]]


class _ContextManaged(Protocol):
    """``with obj:`` closes ``obj`` on exit."""

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


@runtime_checkable
class Producer(_ContextManaged, Protocol):
    """A thread-safe message producer (seed ``Producer``)."""

    def send(self, msg: Message, callback: DeliveryCallback | None = None) -> None:
        """Queue ``msg`` and return at once; ``callback`` gets the delivery result later."""
        ...

    def send_sync(self, msg: Message, timeout: float | None = None) -> None:
        """Send ``msg`` and block until delivered; raise :class:`MQError` on failure."""
        ...

    def flush(self, timeout: float | None = None) -> int:
        """Wait for queued messages; return how many are still undelivered."""
        ...

    def close(self) -> None:
        """Flush, then report anything undelivered to its callback as an error. Idempotent."""
        ...


@runtime_checkable
class Consumer(_ContextManaged, Protocol):
    """A consumer-group member (seed ``Consumer``)."""

    def subscribe(self, topics: Sequence[str], callback: ConsumeCallback) -> None:
        """Consume ``topics`` and call ``callback`` per message until :meth:`close` (blocking)."""
        ...

    def subscribe_batch(
        self,
        topics: Sequence[str],
        callback: BatchCallback,
        *,
        max_messages: int = 100,
        max_wait: float = 0.5,
    ) -> None:
        """Like :meth:`subscribe`, calling ``callback`` with lists of messages."""
        ...

    def close(self) -> None:
        """Finish the message in hand, commit, leave the group. Safe from another thread."""
        ...


@runtime_checkable
class AdminClient(_ContextManaged, Protocol):
    """Topic administration (seed §5)."""

    def create_topic(self, name: str, partitions: int = 1, replication_factor: int = 1) -> None:
        """Create ``name``; an existing topic with the same partition count is fine."""
        ...

    def delete_topic(self, name: str) -> None:
        """Delete ``name``."""
        ...

    def list_topics(self) -> list[str]:
        """Names of the non-internal topics, sorted."""
        ...

    def describe_topic(self, name: str) -> TopicInfo:
        """Partition count and replication factor of ``name``."""
        ...

    def close(self) -> None:
        """Release the client. Idempotent."""
        ...


@runtime_checkable
class AsyncProducer(Protocol):
    """The asyncio form of :class:`Producer`."""

    async def send(self, msg: Message, callback: DeliveryCallback | None = None) -> None:
        """Queue ``msg``; ``callback`` runs on the event loop with the delivery result."""
        ...

    async def send_sync(self, msg: Message, timeout: float | None = None) -> None:
        """Send ``msg`` and wait (without blocking the loop) until delivered."""
        ...

    async def flush(self, timeout: float | None = None) -> int:
        """Wait for queued messages; return how many are still undelivered."""
        ...

    async def close(self) -> None:
        """Flush and release, reporting undelivered messages to their callbacks. Idempotent."""
        ...


@runtime_checkable
class AsyncConsumer(Protocol):
    """The asyncio form of :class:`Consumer`."""

    async def subscribe(self, topics: Sequence[str], callback: AsyncConsumeCallback) -> None:
        """Consume ``topics`` awaiting ``callback`` per message until :meth:`close`."""
        ...

    async def subscribe_batch(
        self,
        topics: Sequence[str],
        callback: AsyncBatchCallback,
        *,
        max_messages: int = 100,
        max_wait: float = 0.5,
    ) -> None:
        """Like :meth:`subscribe`, awaiting ``callback`` with lists of messages."""
        ...

    def messages(self, topics: Sequence[str]) -> AsyncIterator[Message]:
        """Iterate messages; a message's offset is stored when the next one is requested."""
        ...

    async def close(self) -> None:
        """Finish the message in hand, commit, leave the group. Idempotent."""
        ...
