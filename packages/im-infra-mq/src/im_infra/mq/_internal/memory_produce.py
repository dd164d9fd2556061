"""The in-memory producer's core, without I/O: what the blocking and asyncio drivers in
``im_infra.mq.testing`` share.

:class:`ProducerCore` checks and encodes a message as the real producer does, stores it in the
:class:`~im_infra.mq._internal.memory.BrokerState` and hands back the delivery report to run;
it counts the reports not run yet. The drivers only decide where a report runs (the blocking
producer's own thread, or the event loop) and how a caller waits for it.
"""

from __future__ import annotations

import threading

from im_infra import clog
from im_infra.mq._internal.memory import BrokerState
from im_infra.mq._internal.tracing import current_trace_headers
from im_infra.mq._internal.validate import check_headers, check_topic, explain
from im_infra.mq.errors import MQError, ProducerClosedError, SendTimeoutError
from im_infra.mq.message import Message
from im_infra.mq.protocols import DeliveryCallback

__all__ = ["ProducerCore", "Report", "encode", "outgoing", "store", "timeout_error"]

#: A delivery report to run: (callback, the sender's trace id, topic, delivery error).
Report = tuple[DeliveryCallback | None, str | None, str, MQError | None]


def encode(what: str, data: bytes | str | None) -> bytes | None:
    """``data`` as stored: bytes (str as UTF-8) or None; TypeError naming ``what`` else."""
    if data is None or isinstance(data, bytes):
        return data
    if isinstance(data, str):
        return data.encode("utf-8")
    raise TypeError(f"message {what} must be bytes, str or None, got {type(data).__name__}")


def outgoing(msg: Message) -> tuple[Message, str | None]:
    """``msg`` as stored (key, value and headers as bytes; the current trace id added as the
    real producer adds it, never replacing a header the caller set) and the trace id to bind
    around its delivery callback. Bad fields raise the real producer's InvalidArgumentError."""
    if msg.topic:  # an empty name fails at delivery, as on the broker
        check_topic(msg.topic, "message topic")
    elif not isinstance(msg.topic, str):
        raise explain(msg, TypeError("topic"))
    if msg.headers:
        check_headers(msg.headers)
    tid, trace = current_trace_headers()
    headers = {**trace, **msg.headers} if trace is not None else dict(msg.headers)
    try:
        out = Message(
            msg.topic,
            encode("key", msg.key),
            encode("value", msg.value),
            {k: encode("header", v) or b"" for k, v in headers.items()},
            msg.partition,
        )
    except (TypeError, UnicodeEncodeError) as exc:
        raise explain(msg, exc) from exc
    if out.partition is not None and (
        type(out.partition) is bool or not isinstance(out.partition, int)
    ):
        raise explain(msg, TypeError("partition"))
    return out, tid


def store(state: BrokerState, out: Message) -> MQError | None:
    """Append ``out`` (encoded by :func:`outgoing`) to its topic; the delivery error, if any."""
    key = out.key if isinstance(out.key, bytes) else None
    value = out.value if isinstance(out.value, bytes) else None
    try:
        state.append(out, key, value)
    except MQError as exc:
        return exc
    return None


def timeout_error(topic: str, wait: float) -> SendTimeoutError:
    """What ``send_sync`` raises when no delivery report came within ``wait`` seconds."""
    return SendTimeoutError(
        f"no delivery report for a message to topic {topic!r} within {wait:.1f}s",
        code="_TIMED_OUT",
        retriable=True,
    )


class ProducerCore:
    """A producer's state: open or closed, and the delivery reports not run yet. Thread-safe.

    ``accept`` stores a message and returns its report; the driver runs the report with
    ``deliver`` where the real producer would (its poller thread, the event loop).
    """

    __slots__ = ("_closed", "_log", "_pending", "_state", "idle")

    def __init__(self, state: BrokerState, logger: clog.Logger | None) -> None:
        self._state = state
        self._log = (logger or clog.get_logger("mq")).named("producer")
        #: Notified whenever a report ran (``pending`` went down).
        self.idle = threading.Condition()
        self._pending = 0
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def pending(self) -> int:
        """How many accepted messages' reports have not run yet."""
        return self._pending

    def accept(self, msg: Message, callback: DeliveryCallback | None) -> Report:
        """Store ``msg``; its report, to be run once by :meth:`deliver`. Raises
        :class:`~im_infra.mq.ProducerClosedError` after :meth:`shut` (before looking at the
        message, as the Kafka producer does) and InvalidArgumentError for a bad field."""
        self._check_open()
        out, tid = outgoing(msg)
        with self.idle:
            self._check_open()  # again: shut meanwhile (close's flush must see this one)
            self._pending += 1
        return callback, tid, msg.topic, store(self._state, out)

    def deliver(self, report: Report) -> None:
        """Run a delivery callback with the sender's trace id bound (as the real producers
        do); without a callback a failed delivery is logged. Never raises an Exception."""
        callback, tid, topic, error = report
        try:
            if callback is None:
                if error is not None:
                    self._log.error("message delivery failed", topic=topic, cause=str(error))
                return
            token = None if tid is None else clog.set_trace_id(tid)
            try:
                callback(error)
            except Exception:
                self._log.exception("delivery callback raised", topic=topic)
            finally:
                if token is not None:
                    clog.reset_trace_id(token)
        finally:
            with self.idle:
                self._pending -= 1
                self.idle.notify_all()

    def _check_open(self) -> None:
        with self.idle:
            if self._closed:
                raise ProducerClosedError("the producer is closed")

    def shut(self) -> bool:
        """Refuse further sends; False when it was already shut (close is idempotent)."""
        with self.idle:
            was, self._closed = self._closed, True
            return not was
