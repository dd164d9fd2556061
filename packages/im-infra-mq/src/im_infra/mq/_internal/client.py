"""Pieces shared by the producer, consumer and admin client."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from confluent_kafka import KafkaError, KafkaException

from im_infra import clog
from im_infra.mq.errors import AuthenticationError, ConfigError

__all__ = ["AuthFailure", "build_client", "log_client_error", "redacted"]

C = TypeVar("C")


def redacted(props: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of librdkafka properties with secrets masked and callables dropped."""
    out: dict[str, Any] = {}
    for key, value in props.items():
        if callable(value) or isinstance(value, logging.Logger):
            continue
        out[key] = "***" if "password" in key or "secret" in key else value
    return out


def log_client_error(log: clog.Logger, role: str, err: KafkaError) -> None:
    """Log a librdkafka client-level error (``error_cb``) at a level matching its impact."""
    if err.fatal():
        log.error(f"fatal {role} error", cause=err.str(), code=err.name())
    elif err.code() == KafkaError._TRANSPORT:
        # One per failed connection attempt; librdkafka retries, and its own log has the detail.
        log.debug(f"{role} connection error", cause=err.str(), code=err.name())
    else:
        log.warning(f"{role} client error", cause=err.str(), code=err.name())


class AuthFailure:
    """The SASL authentication failure librdkafka last reported for one client (``error_cb``).

    librdkafka keeps reconnecting after a refused authentication and only says so through
    ``error_cb`` (``_AUTHENTICATION``); the clients turn that into :class:`AuthenticationError`
    where an operation would otherwise just time out.
    """

    __slots__ = ("fresh", "reason")

    def __init__(self) -> None:
        self.reason: str | None = None
        """librdkafka's description of the last refusal; None once a request succeeded."""
        self.fresh = False
        """A refusal was reported that the client has not acted on yet."""

    def record(self, err: KafkaError) -> None:
        if err.code() == KafkaError._AUTHENTICATION:
            self.reason = err.str()
            self.fresh = True

    def take_fresh(self) -> bool:
        """Whether a new refusal arrived since the last call."""
        fresh, self.fresh = self.fresh, False
        return fresh

    def error(self, what: str) -> AuthenticationError | None:
        """The error to raise for ``what`` failing, when authentication is the reason."""
        if self.reason is None:
            return None
        return AuthenticationError(
            f"{what}: SASL authentication failed: {self.reason} (check security.sasl "
            "mechanism, username and password)"
        )


def build_client(
    factory: Callable[[dict[str, Any]], C],
    role: str,
    properties: Mapping[str, Any],
    log: clog.Logger,
    *,
    forward_logs: bool = True,
    auth: AuthFailure | None = None,
) -> tuple[C, dict[str, Any]]:
    """Create a librdkafka client with im-infra's error and log hooks.

    Returns the client and its properties with secrets masked. ``forward_logs`` routes
    librdkafka's log lines through stdlib logging (served by poll, which clog receives).
    ``auth`` records SASL authentication failures reported to ``error_cb``.
    """
    props = dict(properties)

    def on_error(err: KafkaError) -> None:
        if auth is not None:
            auth.record(err)
        log_client_error(log, role, err)

    props.setdefault("error_cb", on_error)
    if forward_logs:
        props.setdefault("logger", logging.getLogger(f"im_infra.mq.librdkafka.{role}"))
    try:
        client = factory(props)
    except (KafkaException, ValueError, TypeError) as exc:
        raise ConfigError(f"librdkafka rejected the {role} configuration: {exc}") from exc
    return client, redacted(props)
