"""Exceptions raised by im_infra.mq.

Every error derives from :class:`MQError`. confluent-kafka exceptions are translated at the
boundary (``raise ... from exc``) so callers never have to import confluent_kafka.
"""

from __future__ import annotations

from im_infra import coord

__all__ = [
    "AdminError",
    "AdminTimeoutError",
    "AuthenticationError",
    "ConfigError",
    "ConsumerError",
    "DeliveryError",
    "InvalidArgumentError",
    "MQError",
    "ProducerClosedError",
    "QueueFullError",
    "SendTimeoutError",
    "TopicExistsError",
    "TopicNotFoundError",
]


class MQError(Exception):
    """Base class of every im_infra.mq error.

    ``queued`` is set on errors raised by ``KafkaProducer.send_batch``: how many messages of the
    batch were queued before the one that failed (``None`` elsewhere).
    """

    queued: int | None = None


class ConfigError(MQError, coord.ConfigError):
    """The ``kafka.yaml`` configuration (or an override) is invalid, or a required value (the
    brokers) is not set anywhere. Also a :class:`im_infra.coord.ConfigError`, the shared root
    of every package's config error."""


class InvalidArgumentError(MQError, ValueError):
    """An argument cannot be used as given: a message whose topic, key, value, partition or
    headers have the wrong type or cannot be encoded as UTF-8, an empty topic name in
    ``subscribe``. Names the argument and what is wrong with it (never a value's contents).
    Also a ``ValueError``."""


class DeliveryError(MQError):
    """A message could not be delivered to the broker.

    ``code`` is the librdkafka error name (e.g. ``"_MSG_TIMED_OUT"``, ``"_PURGE_QUEUE"``) when the
    failure came from librdkafka, else ``None``. ``retriable`` tells whether sending again may work.
    """

    def __init__(self, message: str, *, code: str | None = None, retriable: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.retriable = retriable


class QueueFullError(DeliveryError):
    """The producer's local queue stayed full for the whole back-pressure wait."""


class SendTimeoutError(DeliveryError, TimeoutError):
    """``send_sync`` did not get a delivery report within its timeout (also the builtin
    ``TimeoutError``)."""


class ProducerClosedError(MQError):
    """The producer was closed; it accepts no more messages."""


class ConsumerError(MQError):
    """The consumer hit an unrecoverable error (or was used after close)."""


class AdminError(MQError):
    """An administrative operation (topic create/delete/describe) failed."""


class AdminTimeoutError(AdminError, TimeoutError):
    """The broker did not finish an administrative operation within the admin ``timeout``.
    Also the builtin ``TimeoutError``."""


class TopicExistsError(AdminError):
    """The topic exists with a configuration that differs from the one requested."""


class TopicNotFoundError(AdminError):
    """The topic does not exist."""


class AuthenticationError(DeliveryError, AdminError, ConsumerError):
    """The broker refused the client's SASL authentication (wrong username or password, unknown
    user, or a mechanism it does not offer).

    Raised where the operation's own family is expected (a send's :class:`DeliveryError`, an
    admin operation's :class:`AdminError`), so existing handlers still catch it. Not retriable:
    the credentials must change. The message says what the broker answered; it never contains
    the password.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message, code="_AUTHENTICATION", retriable=False)
