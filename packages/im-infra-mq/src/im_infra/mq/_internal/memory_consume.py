"""The in-memory consumer's core, without I/O: every consume loop written once.

A consume loop is a generator (a *flow*) that yields the steps only a driver can take:

- :class:`Fetch`: send back the member's next message, or None when there is none after
  waiting up to ``timeout`` seconds (the asyncio driver, which must not block, looks once and
  sleeps a little; the flow asks again);
- :class:`Call`: call the user's callback with a message or a list (the asyncio driver awaits
  it; ``messages()`` hands it to the ``async for`` body) and send back what it returned; an
  Exception it raised is thrown into the flow;
- :class:`Pause`: wait ``seconds`` between retries; send back whether the consumer was closed
  meanwhile.

Everything else happens here, once for the blocking and the asyncio consumer: joining and
leaving the group, the retry policy, retry and dead-letter topics, batch gathering and batch
retries (:func:`~im_infra.mq._internal.batches.batch_flow`, shared with the Kafka consumer),
the message's trace id bound around its handling, and the commit after the callback returned.
The drivers in ``im_infra.mq.testing`` only take the steps (:func:`advance` feeds a step's
result back).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from im_infra import clog
from im_infra.mq._internal.batches import Failed, batch_flow, failures, log_failure
from im_infra.mq._internal.memory import BrokerState
from im_infra.mq._internal.memory_produce import store
from im_infra.mq._internal.retry_topics import forwards, next_hop, subscription
from im_infra.mq._internal.tracing import bound_from
from im_infra.mq._internal.validate import subscription_topics
from im_infra.mq.batch import check_batch_limits
from im_infra.mq.config import RetryTopicsConfig
from im_infra.mq.errors import ConsumerError
from im_infra.mq.message import Message
from im_infra.mq.retry import RetryPolicy, retry_source

__all__ = ["IDLE_WAIT", "Call", "ConsumerCore", "Fetch", "Flow", "Pause", "Step", "advance"]

#: How long a flow lets its driver wait for a message before it looks at ``closed`` again.
IDLE_WAIT = 0.05


@dataclass(frozen=True, slots=True)
class Fetch:
    """Send back the next message, or None after waiting up to ``timeout`` seconds (sooner is
    fine: the flow asks again until its own deadline)."""

    timeout: float


@dataclass(frozen=True, slots=True)
class Call:
    """Call the user's callback with ``arg`` and send back its result (throw in its
    Exception)."""

    arg: Message | list[Message]


@dataclass(frozen=True, slots=True)
class Pause:
    """Wait ``seconds`` or until the consumer closes; send back whether it closed."""

    seconds: float


Step = Fetch | Call | Pause
#: A consume loop; it ends (returns) when the consumer is closed.
Flow = Generator[Step, Any, None]


def advance(flow: Flow, reply: object = None, error: Exception | None = None) -> Step | None:
    """Feed the previous step's ``reply`` (or throw its ``error``) into ``flow``; the next step,
    or None when the flow ended. The first call starts the flow (it joins the group, raising
    a :class:`~im_infra.mq.ConsumerError` for a bad subscription)."""
    try:
        return flow.send(reply) if error is None else flow.throw(error)
    except StopIteration:
        return None


def handed(msg: Message) -> Message:
    """The copy of a stored message given to the callback (which may mutate it)."""
    return Message(
        msg.topic,
        msg.key,
        msg.value,
        dict(msg.headers),
        msg.partition,
        msg.offset,
        msg.timestamp_ms,
    )


def _at(msg: Message) -> dict[str, object]:
    """Where a message is, as log fields."""
    return {"topic": msg.topic, "partition": msg.partition, "offset": msg.offset}


def _failed_result(result: object) -> None:
    """A callback returning an exception failed (the seed's Go form of returning an error)."""
    if isinstance(result, Exception):
        raise result


class ConsumerCore:
    """A member of a consumer group on a :class:`BrokerState` and its consume loops; the
    blocking and asyncio in-memory consumers add the driver."""

    def __init__(
        self,
        state: BrokerState,
        group_id: str,
        *,
        retry: RetryPolicy | None,
        reset: Literal["earliest", "latest"],
        logger: clog.Logger | None,
        retry_topics: RetryTopicsConfig | None = None,
    ) -> None:
        self._state = state
        self._group_id = group_id
        self._retry = retry
        self._topics = RetryTopicsConfig() if retry_topics is None else retry_topics
        self._sources: tuple[str, ...] = ()
        self._subscribed: tuple[str, ...] = ()  # sources + retry topics; only grows
        self._reset: Literal["earliest", "latest"] = reset
        self._log = (logger or clog.get_logger("mq")).named("consumer")
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._stopped = threading.Event()
        self._stopped.set()
        self._running = False
        self._member: str | None = None

    @property
    def group_id(self) -> str:
        return self._group_id

    @property
    def closed(self) -> bool:
        return self._closing.is_set()

    @property
    def retry_topics(self) -> RetryTopicsConfig:
        """The non-blocking retry settings in force."""
        return self._topics

    def set_retry_topics(self, topics: RetryTopicsConfig) -> None:
        """Apply new retry-topic settings, as a live kafka.yaml change does to the Kafka
        consumer: later failures follow them; new retry topics are subscribed to at once."""
        self._topics = topics
        with self._lock:
            member = self._member
        if member is not None:
            self._grow(member)

    # ------------------------------------------------------------------ the consume loops
    def _each_flow(self, topics: Sequence[str]) -> Flow:
        """``subscribe``: one message at a time, committed once handled."""
        return self._loop(topics, self._each)

    def _batch_flow(self, topics: Sequence[str], max_messages: int, max_wait: float) -> Flow:
        """``subscribe_batch``: lists of up to ``max_messages`` gathered for up to ``max_wait``
        seconds after the first one arrived. Bad limits raise here, before joining."""
        check_batch_limits(max_messages, max_wait)
        return self._loop(
            topics, lambda member, first: self._batch(member, first, max_messages, max_wait)
        )

    def _iterate_flow(self, topics: Sequence[str]) -> Flow:
        """``messages()``: each message is handed out (a :class:`Call` whose reply is ignored)
        and committed when the next one is asked for; a flow closed at the hand-out leaves it
        uncommitted (it is delivered again)."""
        return self._loop(topics, self._hand_out)

    def _loop(self, topics: Sequence[str], each: Callable[[str, Message], Flow]) -> Flow:
        """Join the group on ``topics``, run ``each(member, message)`` per fetched message until
        the consumer closes, leave the group (also when the flow is closed early)."""
        member = self._join(topics)
        try:
            while not self._closing.is_set():
                msg = yield Fetch(IDLE_WAIT)
                if msg is not None:
                    yield from each(member, msg)
        finally:
            self._leave(member)

    def _each(self, member: str, msg: Message) -> Flow:
        given = handed(msg)
        with bound_from(given.headers):
            finished = yield from self._handle(given)
        if finished:
            self._state.commit(self._group_id, member, msg)

    def _batch(self, member: str, first: Message, max_messages: int, max_wait: float) -> Flow:
        msgs = [handed(first)]
        deadline = time.monotonic() + max_wait
        while len(msgs) < max_messages:
            more = yield Fetch(max(deadline - time.monotonic(), 0))
            if more is not None:
                msgs.append(handed(more))
            elif time.monotonic() >= deadline:
                break
        yield from self._handle_batch(member, msgs)

    def _hand_out(self, member: str, msg: Message) -> Flow:
        yield Call(handed(msg))
        self._state.commit(self._group_id, member, msg)

    # ------------------------------------------------------------------ handling
    def _handle(self, msg: Message) -> Generator[Step, Any, bool]:
        """One message: the callback with retries, then the retry topics and the dead-letter
        topic, as the Kafka consumer does. Returns whether it is finished (may be committed)."""
        retry = self._retry
        attempts = 1 if retry is None else retry.max_attempts
        attempt = 1
        while True:
            try:
                _failed_result((yield Call(msg)))
                return True
            except Exception as exc:
                self._log.exception(
                    "consume callback failed", **_at(msg), attempt=attempt, max_attempts=attempts
                )
                error = exc
            if retry is None and not forwards(msg, self._topics):
                return True  # the seed's behaviour: logged and skipped
            if attempt >= attempts:
                self._forward(msg, error, attempt)
                return True
            assert retry is not None  # attempts > 1
            if (yield Pause(retry.pause(attempt))):
                return False
            attempt += 1

    def _handle_batch(self, member: str, msgs: list[Message]) -> Generator[Step, Any, None]:
        """One list through :func:`batch_flow`; a finished list's messages that failed every
        attempt go on their way one by one, then every offset is committed."""
        flow = batch_flow(msgs, self._retry)
        ask, attempt = next(flow), 0
        try:
            while True:
                kind, arg = ask
                reply: Failed | bool | None
                if kind == "call":
                    attempt += 1
                    batch: list[Message] = arg  # type: ignore[assignment]
                    try:
                        _failed_result((yield Call(list(batch))))
                        reply = {}
                    except Exception as exc:
                        reply = self._call_failed(batch, exc, attempt)
                else:
                    reply = yield Pause(arg)  # type: ignore[arg-type]
                ask = flow.send(reply)
        except StopIteration as done:
            finished, failed, attempt = done.value
        if not finished:
            return
        for msg, error in failed:
            with bound_from(msg.headers):
                self._forward(msg, error, attempt)
        for msg in msgs:
            self._state.commit(self._group_id, member, msg)

    def _call_failed(self, msgs: list[Message], exc: Exception, attempt: int) -> Failed:
        """A batch callback raised ``exc`` (called from the ``except`` clause): which failed."""
        failed = failures(exc, len(msgs))
        attempts = 1 if self._retry is None else self._retry.max_attempts
        log_failure(self._log, msgs, failed, attempt, attempts)
        return failed

    def _forward(self, msg: Message, exc: Exception, attempts: int) -> None:
        """Store a message that failed its last attempt in its next retry topic or the
        dead-letter topic (created like the Kafka consumer's admin creates them)."""
        retry = self._retry
        dead_letter = retry is not None and retry.dead_letter
        hop = next_hop(msg, exc, attempts, self._topics, dead_letter, self._group_id)
        if hop is None:
            return
        target, dead = hop.message.topic, hop.delay_ms is None
        self._state.ensure_topic(target, retry_source(msg.topic) or msg.topic)
        error = store(self._state, hop.message)
        if error is not None:
            self._log.error(
                f"could not write message to the {'dead-letter' if dead else 'retry'} topic; "
                "it is skipped",
                topic=msg.topic,
                dlq_topic=target,
                cause=str(error),
            )
        elif dead:
            self._log.warning("message sent to the dead-letter topic", **_at(msg), dlq_topic=target)
        else:
            self._log.info(
                "message sent to a retry topic",
                **_at(msg),
                retry_topic=target,
                delay_ms=hop.delay_ms,
            )

    # ------------------------------------------------------------------ the group
    def _fetch(self, timeout: float) -> Message | None:
        """The member's next message, waiting up to ``timeout`` (0: just look)."""
        member = self._member
        if member is None:
            return None
        return self._state.fetch(self._group_id, member, timeout)

    def _grow(self, member: str) -> None:
        """Subscribe ``member`` to the current retry topics too (creating them)."""
        with self._lock:
            wanted = subscription(self._sources, self._topics)
            new = tuple(t for t in wanted if t not in self._subscribed)
            if new:
                for name in new:
                    self._state.ensure_topic(name, retry_source(name) or name)
                self._subscribed += new
                self._state.resubscribe(self._group_id, member, self._subscribed)

    def _join(self, topics: Sequence[str]) -> str:
        topics = subscription_topics(topics)
        with self._lock:
            if self._closing.is_set():
                raise ConsumerError("the consumer is closed")
            if self._running:
                raise ConsumerError("subscribe is already running on this consumer")
            self._running = True
            self._stopped.clear()
        self._sources = self._subscribed = tuple(topics)
        member = self._state.join(self._group_id, self._sources, self._reset)
        self._grow(member)
        with self._lock:
            self._member = member
        return member

    def _leave(self, member: str) -> None:
        self._state.leave(self._group_id, member)
        with self._lock:
            self._running = False
            self._member = None
        self._stopped.set()

    def _stop(self) -> None:
        self._closing.set()
        self._state.wake()
