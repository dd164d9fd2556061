"""Exceptions raised by im_infra.cache.

Every backend (redis-py) exception is translated at the boundary into one of these, with the
original chained as ``__cause__``. Messages never contain a password.
"""

from __future__ import annotations

from im_infra.coord.errors import ConfigError as _CoordConfigError

__all__ = [
    "CacheAuthError",
    "CacheConfigError",
    "CacheError",
    "CachePermissionError",
    "CacheResponseError",
    "CacheTimeout",
    "CacheUnavailable",
    "CacheWatchError",
    "LockAcquireTimeout",
    "LockError",
    "LockNotOwned",
    "OnceInProgress",
    "SerializationError",
]


class CacheError(Exception):
    """Base class of every error raised by im_infra.cache."""


class CacheConfigError(CacheError, _CoordConfigError):
    """The redis configuration (redis.yaml, overrides) is invalid: names the document, the field
    and the problem. Also a ``coord.ConfigError``."""


class CacheUnavailable(CacheError):  # noqa: N818 - names from the issue
    """Redis could not be reached (refused, reset, closed) after the configured retries."""


class CacheTimeout(CacheUnavailable):
    """Connecting to or reading from Redis took longer than the configured timeout."""


class CacheAuthError(CacheError):
    """Redis rejected the credentials (wrong password, unknown or disabled ACL user)."""


class CachePermissionError(CacheAuthError):
    """The authenticated ACL user may not run this command or touch this key (NOPERM)."""


class CacheResponseError(CacheError):
    """Redis answered with an error (wrong type, not an integer, script error, ...)."""


class CacheWatchError(CacheError):
    """A transaction was aborted because a WATCHed key changed before EXEC."""


class SerializationError(CacheError):
    """A value could not be serialized or deserialized by the configured serializer."""


class LockError(CacheError):
    """Base class of distributed-lock errors."""


class LockNotOwned(LockError):  # noqa: N818 - names from the issue
    """The lock is not held by this owner token (expired, or held by someone else)."""


class LockAcquireTimeout(LockError):  # noqa: N818 - names from the issue
    """The lock could not be acquired within the given timeout."""


class OnceInProgress(CacheError):  # noqa: N818 - reads as a state, like LockNotOwned
    """An idempotency key is being handled by another caller (its in-progress mark has not
    expired): do not acknowledge the message, it will be delivered again."""
