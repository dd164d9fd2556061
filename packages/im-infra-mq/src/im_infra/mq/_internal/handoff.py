"""Handing polled batches from the consumer's poll thread to an asyncio event loop.

One cross-thread hop per polled batch (not per message): the poll thread schedules one coroutine
(or queues one item) per batch and waits for the loop to report how far it got; the handler still
sees one message at a time, with its trace id bound. Offsets are stored by the poll thread only
for the messages the loop reported finished (see ``KafkaConsumer.run``'s ``batch_handler``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from im_infra.mq._internal.tracing import bound_from
from im_infra.mq.consumer import to_message
from im_infra.mq.message import Message

__all__ = ["BatchRunner", "CallbackSlot", "Handoff"]

#: What a batch hop returns: see ``im_infra.mq.consumer.BatchHandler``.
Outcome = tuple[int, Exception | None]


class Core(Protocol):
    """The parts of the blocking consumer core the loop side uses."""

    @property
    def closed(self) -> bool: ...

    @property
    def retries(self) -> bool: ...

    def report_failure(self, msg: Message, exc: Exception) -> None: ...


class CallbackSlot:
    """The task running the asyncio consumer's callbacks right now (so that cancelling the
    subscription reaches it), and whether the subscription is being cancelled. Loop only."""

    __slots__ = ("aborting", "task")

    def __init__(self) -> None:
        self.task: asyncio.Task[object] | None = None
        self.aborting = False


class BatchRunner:
    """The ``batch_handler`` of ``subscribe``: runs a batch through ``callback`` on ``loop``.

    Called on the poll thread; returns ``(finished, failure)``. A failing callback is logged on
    the loop (its trace id bound) and counts as finished, unless the core retries: then the
    batch stops there and the core retries that message before handing over the rest.
    """

    __slots__ = ("callback", "core", "loop", "slot")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        callback: Callable[[Message], Awaitable[object]],
        core: Core,
        slot: CallbackSlot,
    ) -> None:
        self.loop = loop
        self.callback = callback
        self.core = core
        self.slot = slot

    def __call__(self, msgs: list[Any]) -> Outcome:
        progress = [0]
        try:
            future = asyncio.run_coroutine_threadsafe(self._run(msgs, progress), self.loop)
        except RuntimeError:  # the event loop is closed: nobody is left to handle them
            return 0, None
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            return progress[0], None  # cancelled mid-batch: the one in hand is not finished

    async def _run(self, kmsgs: list[Any], progress: list[int]) -> Outcome:
        slot, core, callback = self.slot, self.core, self.callback
        if slot.aborting:
            return 0, None
        slot.task = asyncio.current_task()
        i = 0
        try:
            for kmsg in kmsgs:
                if core.closed:
                    break
                msg = to_message(kmsg)
                if msg.headers:
                    with bound_from(msg.headers):
                        try:
                            await callback(msg)
                        except Exception as exc:
                            core.report_failure(msg, exc)
                            if core.retries:
                                return i, exc
                else:
                    try:
                        await callback(msg)
                    except Exception as exc:
                        core.report_failure(msg, exc)
                        if core.retries:
                            return i, exc
                i += 1
            return i, None
        except BaseException:
            progress[0] = i  # read by the poll thread once this task is cancelled
            raise
        finally:
            slot.task = None


class Handoff:
    """One polled batch queued for ``async for``: the iterator converts its confluent-kafka
    messages one at a time and counts those whose loop body finished; the poll thread waits on
    :attr:`ack` and stores that many."""

    __slots__ = ("ack", "done", "kmsgs")

    def __init__(self, kmsgs: list[Any]) -> None:
        self.kmsgs = kmsgs
        self.done = 0
        self.ack: concurrent.futures.Future[None] = concurrent.futures.Future()

    def wait(self) -> Outcome:
        """Poll thread: block until the iterator is through (or gave up); ``(done, None)``."""
        self.ack.result()  # finish() is called on abandonment and close too
        return self.done, None

    def finish(self) -> None:
        """Loop side: release the poll thread (idempotent)."""
        if not self.ack.done():
            self.ack.set_result(None)
