"""Handing polled batches from the consumer's poll thread to an asyncio event loop.

One cross-thread hop per polled batch (not per message): the poll thread schedules one coroutine
(or queues one item) per batch and waits for the loop to report how far it got; the handler still
sees one message at a time, with its trace id bound. Offsets are stored by the poll thread only
for the messages the loop reported finished (see ``ConsumerCore.run``'s ``hand_over``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from im_infra.mq._internal.consumer_core import ConsumerCore
from im_infra.mq._internal.consumer_handling import NotFinishedError
from im_infra.mq._internal.kafka_consumer import to_message
from im_infra.mq._internal.offsets import Runs, add_run
from im_infra.mq._internal.ordering import StartGate, chains
from im_infra.mq._internal.tracing import bound_from
from im_infra.mq.message import Message

__all__ = ["AbortedError", "BatchRunner", "CallbackSlot", "ConcurrentRunner", "Handoff"]

#: What a batch hop returns: see ``im_infra.mq._internal.consumer_core.HandOver``.
Outcome = tuple[int, Exception | None]


class AbortedError(NotFinishedError):
    """Raised into the core when an asyncio iterator is abandoned or a callback cancelled
    mid-message (not stored: delivered again)."""


class CallbackSlot:
    """The task running the asyncio consumer's callbacks right now (so that cancelling the
    subscription reaches it), and whether the subscription is being cancelled. Loop only."""

    __slots__ = ("aborting", "task", "workers")

    def __init__(self) -> None:
        self.task: asyncio.Task[object] | None = None
        self.workers: set[asyncio.Task[None]] = set()  # a concurrent batch's tasks
        self.aborting = False

    def running(self, task: asyncio.Task[Any] | None) -> bool:
        """Whether ``task`` is one running callbacks right now."""
        return task is not None and (task is self.task or task in self.workers)


async def _checked(callback: Callable[[Message], Awaitable[object]], msg: Message) -> None:
    """Await ``callback(msg)``; a returned exception instance (the seed's "returns an error")
    is raised, so that it counts as a failure like a raised one."""
    if (result := await callback(msg)) is not None and isinstance(result, Exception):
        raise result


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
        core: ConsumerCore,
        slot: CallbackSlot,
    ) -> None:
        self.loop = loop
        self.callback = callback
        self.core = core
        self.slot = slot

    def __call__(self, msgs: list[Any], done: Runs) -> Outcome:
        progress = [0]
        try:
            future = asyncio.run_coroutine_threadsafe(self._run(msgs, done, progress), self.loop)
        except RuntimeError:  # the event loop is closed: nobody is left to handle them
            return 0, None
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            return progress[0], None  # cancelled mid-batch: the one in hand is not finished

    async def _run(self, kmsgs: list[Any], done: Runs, progress: list[int]) -> Outcome:
        slot, core, callback = self.slot, self.core, self.callback
        handling = core.handling
        if slot.aborting:
            return 0, None
        slot.task = asyncio.current_task()
        i = 0
        # The finished messages' runs, kept in locals as in ConsumerCore.consume_batch (the
        # current run: messages ``start`` to ``i`` - 1, of one partition, ending at ``last``).
        topic, partition, start, last = "", -1, 0, -1
        try:
            for kmsg in kmsgs:
                if core.stopping:
                    break
                msg = to_message(kmsg)
                if msg.headers:
                    with bound_from(msg.headers):
                        try:
                            await _checked(callback, msg)
                        except Exception as exc:
                            handling.report(msg, exc)
                            if handling.retries:
                                return i, exc
                else:
                    try:  # the hot path: _checked inlined
                        if (result := await callback(msg)) is not None and isinstance(
                            result, Exception
                        ):
                            raise result
                    except Exception as exc:
                        handling.report(msg, exc)
                        if handling.retries:
                            return i, exc
                if msg.partition != partition or msg.topic != topic:
                    add_run(done, topic, partition, i - start, last)
                    topic, partition, start = msg.topic, msg.partition, i  # type: ignore[assignment]
                last = msg.offset  # type: ignore[assignment]
                i += 1
            return i, None
        except BaseException:
            progress[0] = i  # read by the poll thread once this task is cancelled
            raise
        finally:
            add_run(done, topic, partition, i - start, last)
            slot.task = None


class ConcurrentRunner:
    """The ``batch_handler`` of ``subscribe`` with ``concurrency`` > 1: runs a batch as asyncio
    tasks on ``loop``, one chain of same-key messages per task at a time (at most
    ``concurrency`` tasks), then stores each partition's contiguous finished run itself.

    Called on the poll thread, which blocks until the batch is through; so nothing is in flight
    when the next poll may revoke partitions. A failure with a retry policy continues its retries
    in a worker thread (``retry`` is the per-message hop back to the loop) while the other
    chains go on; its own chain waits for it, keeping the key's order.
    """

    __slots__ = ("callback", "core", "loop", "retry", "slot")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        callback: Callable[[Message], Awaitable[object]],
        core: ConsumerCore,
        slot: CallbackSlot,
        retry: Callable[[Message], object],
    ) -> None:
        self.loop = loop
        self.callback = callback
        self.core = core
        self.slot = slot
        self.retry = retry

    def __call__(self, kmsgs: list[Any], done: Runs) -> Outcome:
        msgs = [to_message(k) for k in kmsgs]
        finished = [False] * len(msgs)
        try:
            future = asyncio.run_coroutine_threadsafe(self._run(msgs, finished), self.loop)
        except RuntimeError:  # the event loop is closed
            self.core.store_finished(msgs, finished)
            return 0, None
        try:
            future.result()
        except concurrent.futures.CancelledError:
            pass  # cancelled: the finished ones are stored, the others delivered again
        finally:
            self.core.store_finished(msgs, finished)
        # Report "all done" so that the core goes on; it stored nothing itself.
        return len(kmsgs), None

    async def _run(self, msgs: list[Message], finished: list[bool]) -> None:
        slot, core = self.slot, self.core
        if slot.aborting:
            return
        slot.task = asyncio.current_task()
        pending = deque(chains(core.ordering_keys(msgs)))
        count = min(core.concurrency, len(pending))
        gate = StartGate(lambda: core.stopping)
        workers = [
            asyncio.ensure_future(self._worker(pending, msgs, finished, gate)) for _ in range(count)
        ]
        slot.workers.update(workers)
        try:
            await asyncio.gather(*workers)
        finally:
            slot.workers.clear()
            slot.task = None

    async def _worker(
        self,
        pending: deque[list[int]],
        msgs: list[Message],
        finished: list[bool],
        gate: StartGate,
    ) -> None:
        core, callback = self.core, self.callback
        handling = core.handling
        while pending:
            for i in pending.popleft():
                msg = msgs[i]
                if not gate.may_start((msg.topic, msg.partition), msg.offset):
                    break  # closing: the rest of this key is delivered again, in order
                with bound_from(msg.headers):
                    try:
                        await _checked(callback, msg)
                    except Exception as exc:
                        handling.report(msg, exc)
                        if handling.retries and not await self.loop.run_in_executor(
                            None, handling.resume, msg, self.retry, exc
                        ):
                            break  # not finished: the rest of this key waits, in order
                finished[i] = True


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
