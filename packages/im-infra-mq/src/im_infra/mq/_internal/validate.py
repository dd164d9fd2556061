"""Checks of caller-supplied arguments (topics, message fields, headers), so bad input is an
InvalidArgumentError naming the argument instead of a TypeError / UnicodeEncodeError from
confluent-kafka (or, for a header name that is not valid UTF-8, a crash inside it).

:func:`check_headers` runs before a message with headers is produced; :func:`explain` runs only
after confluent-kafka refused a message, to say which field was wrong."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from im_infra.mq.errors import ConsumerError, InvalidArgumentError

_PAYLOAD = (bytes, str)


def _utf8(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def check_topic(topic: Any, what: str = "topic") -> str:
    """``topic`` when it is a non-empty str encodable as UTF-8."""
    if not isinstance(topic, str):
        raise InvalidArgumentError(f"{what} must be a str, not {type(topic).__name__}")
    if not topic:
        raise InvalidArgumentError(f"{what} must not be empty")
    if not _utf8(topic):
        raise InvalidArgumentError(f"{what} {topic!r} is not encodable as UTF-8")
    return topic


def check_topics(topics: Iterable[Any]) -> list[str]:
    """The topics of a subscription, each checked (named by position)."""
    try:
        items = list(topics)
    except TypeError:
        raise InvalidArgumentError(
            f"topics must be a list of str, not {type(topics).__name__}"
        ) from None
    return [check_topic(t, f"topics[{i}]") for i, t in enumerate(items)]


def subscription_topics(topics: Any) -> list[str]:
    """What ``subscribe`` was given as topics: one name or a list, each checked, at least one."""
    names = check_topics([topics] if isinstance(topics, str) else topics)
    if not names:
        raise ConsumerError("subscribe needs at least one topic")
    return names


def check_headers(headers: Any) -> None:
    """A message's headers: a mapping of str names to bytes, str or None values."""
    if not isinstance(headers, Mapping):
        raise InvalidArgumentError(
            f"message headers must be a dict of str to bytes, not {type(headers).__name__}"
        )
    for name, value in headers.items():
        if not isinstance(name, str):
            raise InvalidArgumentError(f"header name must be a str, not {type(name).__name__}")
        if not _utf8(name):
            raise InvalidArgumentError(f"header name {name!r} is not encodable as UTF-8")
        if value is not None and not isinstance(value, _PAYLOAD):
            raise InvalidArgumentError(
                f"header {name!r}: value must be bytes, str or None, not {type(value).__name__}"
            )
        if isinstance(value, str) and not _utf8(value):
            raise InvalidArgumentError(f"header {name!r}: value is not encodable as UTF-8")


def explain(msg: Any, exc: Exception) -> InvalidArgumentError:
    """Why confluent-kafka refused ``msg`` with ``exc`` (a TypeError or ValueError)."""
    try:
        check_topic(getattr(msg, "topic", None), "message topic")
        for field in ("key", "value"):
            data = getattr(msg, field, None)
            if data is not None and not isinstance(data, bytes | str | bytearray | memoryview):
                raise InvalidArgumentError(
                    f"message {field} must be bytes, str or None, not {type(data).__name__}"
                    " (serialize it first)"
                )
            if isinstance(data, str) and not _utf8(data):
                raise InvalidArgumentError(f"message {field} is not encodable as UTF-8")
        partition = getattr(msg, "partition", None)
        if partition is not None and (type(partition) is bool or not isinstance(partition, int)):
            raise InvalidArgumentError(
                f"message partition must be an int or None, not {type(partition).__name__}"
            )
        check_headers(getattr(msg, "headers", {}))
    except InvalidArgumentError as error:
        return error
    return InvalidArgumentError(f"message refused by the client: {exc}")
