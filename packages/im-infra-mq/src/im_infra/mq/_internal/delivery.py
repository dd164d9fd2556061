"""The producer's delivery side without I/O: a librdkafka delivery report becomes ``None`` or a
:class:`~im_infra.mq.DeliveryError` and reaches the user's callback.

- :func:`delivery_error` maps a failed report (or a refused ``produce``) to the error the user
  sees, taking into account the fatal error that ended the librdkafka producer the message was
  queued in and a SASL refusal that made the producer purge its queue.
- :class:`Generation` is one librdkafka producer's lifetime: the fatal error that ended it, if any.
- :class:`DeliveryHook` is what librdkafka is handed per message: it counts the report, builds the
  error and runs the user's callback with the sender's trace id bound. It runs on whichever thread
  serves the report (``poll``); it never raises.
"""

from __future__ import annotations

from typing import Any

from confluent_kafka import KafkaError

from im_infra import clog
from im_infra.mq.errors import DeliveryError
from im_infra.mq.protocols import DeliveryCallback

from .client import AuthFailure
from .metrics import ProducerMetrics

__all__ = [
    "FATAL_CAUSES",
    "PURGED",
    "DeliveryHook",
    "Generation",
    "delivery_error",
    "is_fatal",
]

#: Codes of the reports of messages purged from librdkafka's queue (close, replacement, auth).
PURGED = frozenset({"_PURGE_QUEUE", "_PURGE_INFLIGHT"})

#: Delivery-report errors that only occur as the cause of a fatal error of the idempotent
#: producer (the per-message copy of the error does not carry the fatal flag). An
#: UNKNOWN_PRODUCER_ID that librdkafka can retry safely (nothing unacknowledged before it) is
#: retried after an epoch bump and never reported; one it cannot is fatal ("unable to retry
#: without risking duplication/reordering"), e.g. after a broker restart that lost its state.
FATAL_CAUSES = frozenset(
    {
        KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER,
        KafkaError.UNKNOWN_PRODUCER_ID,
        KafkaError.INVALID_PRODUCER_EPOCH,
        KafkaError.PRODUCER_FENCED,
    }
)


def is_fatal(err: KafkaError) -> bool:
    """Whether ``err`` ended its librdkafka producer for good."""
    return bool(err.fatal()) or err.code() == KafkaError._FATAL


class Generation:
    """One librdkafka producer's lifetime; ``fatal`` is set when a fatal error ended it, so the
    delivery reports of its messages carry that cause."""

    __slots__ = ("fatal",)

    def __init__(self) -> None:
        self.fatal: KafkaError | None = None


def _fatal_delivery_error(fatal: KafkaError, topic: str) -> DeliveryError:
    return DeliveryError(
        f"message for topic {topic!r} was not delivered: the producer hit a fatal error "
        f"({fatal.name()}: {fatal.str()}) and was replaced; send it again (the broker may "
        "already have written it)",
        code=fatal.name(),
        retriable=True,
    )


def delivery_error(
    err: KafkaError,
    topic: str,
    fatal: KafkaError | None = None,
    auth: AuthFailure | None = None,
) -> DeliveryError:
    """The DeliveryError for a failed message; ``fatal``: the fatal error that ended the
    librdkafka producer it was queued in (then purged and fatal reports carry that cause);
    ``auth``: the client's SASL refusal record (purged after a refusal: AuthenticationError)."""
    if (is_fatal(err) or err.code() in FATAL_CAUSES) and (
        fatal is None or err.code() != KafkaError._FATAL
    ):
        return _fatal_delivery_error(err, topic)
    if fatal is not None and (err.name() in PURGED or is_fatal(err)):
        return _fatal_delivery_error(fatal, topic)
    name = err.name()
    refused = None if auth is None or name not in PURGED else auth.error(f"send to {topic!r}")
    if refused is not None:
        return refused  # purged by the poller after the broker refused the credentials
    if name in PURGED:
        return DeliveryError(
            f"message for topic {topic!r} was not delivered before the producer closed ({name})",
            code=name,
            retriable=True,
        )
    return DeliveryError(
        f"delivery to topic {topic!r} failed: {err.str()} ({name})",
        code=name,
        retriable=bool(err.retriable()),
    )


class DeliveryHook:
    """The delivery hook handed to librdkafka: runs the user's callback with the result."""

    __slots__ = ("auth", "callback", "generation", "log", "metrics", "report", "tid")

    def __init__(
        self,
        callback: DeliveryCallback | None,
        tid: str | None,
        log: clog.Logger,
        metrics: ProducerMetrics,
        generation: Generation,
        auth: AuthFailure,
    ) -> None:
        self.callback = callback
        self.tid = tid
        self.log = log
        self.metrics = metrics
        self.generation = generation
        self.auth = auth
        #: What librdkafka is handed: a bound method, which it calls ~10 % cheaper than the
        #: instance (no ``__call__`` lookup per delivery report); bound once, shared by every
        #: message sent with this hook.
        self.report = self.__call__

    def __call__(self, err: KafkaError | None, kmsg: Any) -> None:
        if err is None:
            self.metrics.delivered(kmsg)
            self.auth.reason = None
            error = None
        else:
            error = delivery_error(err, kmsg.topic(), self.generation.fatal, self.auth)
            self.metrics.delivery_failed(kmsg, err.name())
        callback = self.callback
        if callback is None:
            if error is not None:
                self.log.error("message delivery failed", topic=kmsg.topic(), cause=str(error))
            return
        token = None if self.tid is None else clog.set_trace_id(self.tid)
        try:
            callback(error)
        except Exception as exc:
            self.metrics.delivery_callback_error(exc)
            self.log.exception("delivery callback raised", topic=kmsg.topic())
        finally:
            if token is not None:
                clog.reset_trace_id(token)
