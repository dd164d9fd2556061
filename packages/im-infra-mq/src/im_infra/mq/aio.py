"""asyncio producer and consumer, sharing the blocking classes' core.

confluent-kafka 2.16's own ``confluent_kafka.aio.AIOProducer`` refuses ``headers`` (it raises
``NotImplementedError``), and im-infra needs headers for ``trace_id``. So
:class:`AsyncKafkaProducer` drives the producer core (``_internal/producer_core.py``) that
:class:`KafkaProducer` drives too, waiting out back-pressure with ``asyncio.sleep`` and running
delivery callbacks on the event loop; :class:`AsyncKafkaConsumer` wraps the blocking
:class:`KafkaConsumer` and bridges its results to the event loop. The librdkafka work stays on the
background threads.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from im_infra import clog
from im_infra.clog.lifecycle import AsyncClosing
from im_infra.coord.deprecation import deprecated_names

from ._internal.consumer_core import Batches, ConsumerCore, HandOver, no_handler
from ._internal.handoff import AbortedError, BatchRunner, CallbackSlot, ConcurrentRunner, Handoff
from ._internal.kafka_consumer import to_message
from ._internal.offsets import Runs, add_finished
from .batch import AsyncBatchCallback, check_batch_limits
from .consumer import KafkaConsumer
from .errors import ConsumerError, MQError, SendTimeoutError
from .message import Message
from .producer import KafkaProducer, core_of
from .protocols import AsyncConsumeCallback, DeliveryCallback

__all__ = ["AsyncKafkaConsumer", "AsyncKafkaProducer"]

__getattr__ = deprecated_names(
    __name__,
    {"KafkaAsyncConsumer": "AsyncKafkaConsumer", "KafkaAsyncProducer": "AsyncKafkaProducer"},
    "0.2.0",
)


def _resolve(future: asyncio.Future[None], err: MQError | None) -> None:
    if future.done():
        return
    if err is None:
        future.set_result(None)
    else:
        future.set_exception(err)


class _OnLoop:
    """Runs a delivery callback on its event loop (called from the thread serving the report)."""

    __slots__ = ("callback", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: DeliveryCallback) -> None:
        self.loop = loop
        self.callback = callback

    def __call__(self, err: MQError | None) -> None:
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is left to tell
            self.loop.call_soon_threadsafe(self.callback, err)


class AsyncKafkaProducer(AsyncClosing):
    """asyncio producer; build it with :func:`im_infra.mq.new_async_producer`."""

    def __init__(self, core: KafkaProducer) -> None:
        """Drive the core of the blocking producer ``core`` (built by the factory): both send
        through one librdkafka producer, whose poller thread serves the delivery reports."""
        self._producer = core
        self._core = core_of(core)
        self._last_adapter: _OnLoop | None = None

    @property
    def core(self) -> KafkaProducer:
        """The blocking producer over the same core (sends through either are one stream)."""
        return self._producer

    async def send(self, msg: Message, callback: DeliveryCallback | None = None) -> None:
        """Queue ``msg``; ``callback`` is called on this event loop with the delivery result.

        A full local queue is waited out with ``asyncio.sleep`` (the loop keeps running) for up to
        the back-pressure timeout, then :class:`QueueFullError` is raised.
        """
        if callback is None:
            await self._produce(msg, None)
            return
        loop = asyncio.get_running_loop()
        # Reuse the adapter while loop and callback repeat, so that the core can reuse its
        # delivery hook too (see ProducerCore.hook).
        adapter = self._last_adapter
        if adapter is None or adapter.loop is not loop or adapter.callback is not callback:
            adapter = self._last_adapter = _OnLoop(loop, callback)
        await self._produce(msg, adapter)

    async def send_sync(self, msg: Message, timeout: float | None = None) -> None:
        """Send ``msg`` and wait until the broker acknowledged it; raise on failure."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()

        def on_loop(err: MQError | None) -> None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_resolve, future, err)

        await self._produce(msg, on_loop)
        wait = self._core.message_timeout + 5.0 if timeout is None else timeout
        try:
            await asyncio.wait_for(future, wait)
        except TimeoutError as exc:
            raise SendTimeoutError(
                f"no delivery report for a message to topic {msg.topic!r} within {wait:.1f}s",
                code="_TIMED_OUT",
                retriable=True,
            ) from exc

    async def flush(self, timeout: float | None = None) -> int:
        """Wait (in a worker thread) for queued messages; return how many remain."""
        return await asyncio.get_running_loop().run_in_executor(None, self._core.flush, timeout)

    async def close(self) -> None:
        """Flush and release; undelivered messages are reported to their callbacks. Idempotent."""
        # through the blocking twin's close(): the same core close, plus what is tied to the
        # producer's life (clog.lifecycle.on_close: the live config subscription)
        await asyncio.get_running_loop().run_in_executor(None, self._producer.close, None)

    async def _produce(self, msg: Message, callback: DeliveryCallback | None) -> None:
        core = self._core
        headers, hook = core.prepare(msg, callback)
        if core.try_produce(msg, headers, hook):
            return
        wait = core.backpressure(msg.topic)
        while True:
            await asyncio.sleep(wait.next_pause())
            if core.try_produce(msg, headers, hook):
                return


class AsyncKafkaConsumer(AsyncClosing):
    """asyncio consumer-group member; build it with :func:`im_infra.mq.new_async_consumer`.

    A sibling of :class:`KafkaConsumer` over the same consumer core
    (:mod:`im_infra.mq._internal.consumer_core`): the poll loop runs on a dedicated thread;
    each polled batch is handed to the event loop in one hop and the poll thread waits until the
    loop is through it, so ordering, at-least-once offset storing, retries and the dead-letter
    topic behave exactly as in the blocking consumer, at close to its speed.
    """

    def __init__(self, core: KafkaConsumer) -> None:
        """Take over a (not yet subscribed) blocking consumer's group membership: the two share
        its core, the blocking one is only used for :attr:`core`."""
        self._blocking = core
        self._core: ConsumerCore = core._core  # the shared engine (same package)
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="mq-async-consumer"
        )
        # The task running async callbacks (subscribe) and the batch the iterator is on.
        self._slot = CallbackSlot()
        self._pending: Handoff | None = None

    @property
    def core(self) -> KafkaConsumer:
        """The blocking consumer sharing this core (settings, :attr:`~KafkaConsumer.closed`)."""
        return self._blocking

    async def subscribe(self, topics: Sequence[str], callback: AsyncConsumeCallback) -> None:
        """Consume ``topics``, awaiting ``callback(msg)`` per message, until :meth:`close`.

        Cancelling the awaiting task stops the consumer (the message in hand is not stored, so
        it is delivered again).
        """
        loop = asyncio.get_running_loop()

        async def run_callback(msg: Message) -> object:
            # Runs on the loop, like the cancellation path below: no race between the two.
            if self._slot.aborting:
                raise AbortedError("the subscription was cancelled")
            previous, self._slot.task = self._slot.task, asyncio.current_task()
            try:
                tid = msg.trace_id
                if tid is None:
                    return await callback(msg)
                with clog.trace_context(tid):
                    return await callback(msg)
            finally:
                self._slot.task = previous

        def handler(msg: Message) -> object:
            future = asyncio.run_coroutine_threadsafe(run_callback(msg), loop)
            try:
                return future.result()
            except concurrent.futures.CancelledError as exc:
                raise AbortedError("callback cancelled") from exc

        runner: HandOver
        if self._core.concurrency > 1:
            runner = ConcurrentRunner(loop, callback, self._core, self._slot, handler)
        else:
            runner = BatchRunner(loop, callback, self._core, self._slot)
        await self._run(topics, handler, runner)

    async def subscribe_batch(
        self,
        topics: Sequence[str],
        callback: AsyncBatchCallback,
        *,
        max_messages: int = 100,
        max_wait: float = 0.5,
    ) -> None:
        """Consume ``topics``, awaiting ``callback(messages)`` per list of messages, until
        :meth:`close`: the asyncio form of :meth:`KafkaConsumer.subscribe_batch` (same lists,
        offsets, failures and trace ids). One hop to the event loop per list. Cancelling the
        awaiting task stops the consumer (the list in hand is not stored)."""
        check_batch_limits(max_messages, max_wait)
        loop = asyncio.get_running_loop()

        async def run_callback(msgs: list[Message]) -> object:
            if self._slot.aborting:
                raise AbortedError("the subscription was cancelled")
            previous, self._slot.task = self._slot.task, asyncio.current_task()
            try:
                return await callback(msgs)
            finally:
                self._slot.task = previous

        def call(msgs: list[Message]) -> object:
            future = asyncio.run_coroutine_threadsafe(run_callback(msgs), loop)
            try:
                return future.result()
            except concurrent.futures.CancelledError as exc:
                raise AbortedError("callback cancelled") from exc

        await self._run(topics, no_handler, None, batches=(call, max_messages, float(max_wait)))

    async def messages(self, topics: Sequence[str]) -> AsyncIterator[Message]:
        """Iterate over messages of ``topics``: ``async for msg in consumer.messages([...])``.

        A message counts as finished when the loop asks for the next one, i.e. after your loop
        body finished with it; finished offsets are stored once per polled batch. Leaving the loop
        (``break``, an exception) stops the consumer and leaves the last message (and the rest
        of its batch) unstored, so the group delivers them again.
        """
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Handoff] = asyncio.Queue()

        def hand_over(msgs: list[Any], done: Runs) -> tuple[int, Exception | None]:
            item = self._pending = Handoff(msgs)
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # event loop closed
                return 0, None
            try:
                finished, failure = item.wait()
            finally:
                self._pending = None
            add_finished(done, msgs, 0, finished)
            return finished, failure

        def handler(msg: Message) -> object:  # pragma: no cover - the core retries only subscribe
            raise AbortedError("messages() does not retry")

        run = loop.run_in_executor(self._executor, self._core.run, topics, handler, hand_over)
        item: Handoff | None = None
        core = self._core
        try:
            while True:
                getter = asyncio.ensure_future(queue.get())
                waiting: list[asyncio.Future[Any]] = [getter, run]
                await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():
                    getter.cancel()
                    run.result()  # re-raises a ConsumerError from the loop
                    return
                item = getter.result()
                for kmsg in item.kmsgs:
                    if core.stopping:
                        break
                    yield to_message(kmsg)
                    item.done += 1
                item.finish()
                item = None
        finally:
            if not run.done():
                core.request_stop()
                if item is not None:
                    item.finish()
                pending = self._pending
                if pending is not None:
                    pending.finish()
                await asyncio.shield(run)

    async def close(self) -> None:
        """Finish the message in hand, commit, leave the group. Idempotent.

        A running ``subscribe`` callback is allowed to finish; called from inside that callback,
        ``close`` only asks the loop to stop (it cannot wait for itself) and ``subscribe``
        returns after the callback. A message held by an ``async for`` body that has not asked
        for the next one is left unstored (delivered again).
        """
        self._core.request_stop()
        pending = self._pending
        if pending is not None:
            pending.finish()
        if self._slot.running(asyncio.current_task()):
            return
        # through the blocking twin's close(), as for the producer (its on_close callbacks)
        await asyncio.get_running_loop().run_in_executor(None, self._blocking.close)
        self._executor.shutdown(wait=False)

    async def _run(
        self,
        topics: Sequence[str],
        handler: Callable[[Message], object],
        runner: HandOver | None,
        batches: Batches | None = None,
    ) -> None:
        loop = asyncio.get_running_loop()
        core = self._core
        run = loop.run_in_executor(
            self._executor, lambda: core.run(topics, handler, runner, batches=batches)
        )
        try:
            await asyncio.shield(run)
        except asyncio.CancelledError:
            self._core.request_stop()
            self._slot.aborting = True
            if self._slot.task is not None:
                self._slot.task.cancel()
            with contextlib.suppress(ConsumerError, AbortedError):
                await asyncio.shield(run)
            raise
        finally:
            if run.done():
                self._executor.shutdown(wait=False)
