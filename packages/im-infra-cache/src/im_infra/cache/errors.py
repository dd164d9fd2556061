"""Exceptions raised by im_infra.cache.

Every backend (redis-py) exception is translated at the boundary into one of these, with the
original chained as ``__cause__``. Messages never contain a password.
"""

from __future__ import annotations

from im_infra.coord.deprecation import deprecated_names
from im_infra.coord.errors import ConfigError as _CoordConfigError

__all__ = [
    "CacheArgumentError",
    "CacheAuthError",
    "CacheConfigError",
    "CacheError",
    "CacheOutcomeUnknown",
    "CachePermissionError",
    "CacheResponseError",
    "CacheTLSError",
    "CacheTimeout",
    "CacheUnavailable",
    "CacheWatchError",
    "LockError",
    "LockLost",
    "LockTimeout",
    "OnceInProgress",
    "SerializationError",
]


class CacheError(Exception):
    """Base class of every error raised by im_infra.cache."""


class CacheArgumentError(CacheError, ValueError):
    """An argument cannot be sent to Redis: a key that is not a ``str`` or not encodable as
    UTF-8, a ``None`` value (a miss reads as None, so None is not stored), exclusive options.
    Names the argument, never its value. Also a ``ValueError``."""


class CacheConfigError(CacheError, _CoordConfigError):
    """The redis configuration (redis.yaml, overrides) is invalid: names the document, the field
    and the problem. Also a ``coord.ConfigError``."""


class CacheUnavailable(CacheError):  # noqa: N818 - names from the issue
    """Redis could not be reached (refused, reset, closed) after the configured retries."""


class CacheTimeout(CacheUnavailable, TimeoutError):  # noqa: N818 - names from the issue
    """Connecting to or reading from Redis took longer than the configured timeout (also the
    builtin ``TimeoutError``)."""


class CacheOutcomeUnknown(CacheUnavailable):
    """A command that is not safe to repeat (``INCR``, ``LPUSH``, ``SET NX``, a script, a
    pipeline with such a command...) was sent, then the connection timed out or broke before
    its reply came: it may or may not have run, and it was NOT retried. Read the state back (or
    make the write idempotent) before deciding to run it again. ``__cause__`` is redis-py's
    error; :attr:`timed_out` tells a late reply from a broken connection."""

    def __init__(self, message: str, *, timed_out: bool = False) -> None:
        super().__init__(message)
        self.timed_out = timed_out
        """True when the reply did not come within ``readTimeout``."""


class CacheTLSError(CacheUnavailable):
    """The TLS handshake with Redis failed: most often a certificate problem (the server's is
    not signed by ``tls.caCert`` or does not name the host connected to, or the server refused
    or wanted a client certificate). The message says which."""


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


class LockLost(LockError):  # noqa: N818 - coord's name for the same failure (docs/naming.md)
    """The lock is not held by this owner token any more (expired, or held by someone else):
    the critical section is no longer protected. Was ``LockNotOwned`` (deprecated alias until
    0.2.0)."""


class LockTimeout(LockError, TimeoutError):  # noqa: N818 - coord's name (docs/naming.md)
    """The lock could not be acquired within the given timeout, including when Redis was too
    slow or unreachable to answer before it (also the builtin ``TimeoutError``). Was
    ``LockAcquireTimeout`` (deprecated alias until 0.2.0)."""


class OnceInProgress(CacheError):  # noqa: N818 - reads as a state, like LockLost
    """An idempotency key is being handled by another caller (its in-progress mark has not
    expired): do not acknowledge the message, it will be delivered again."""


__getattr__ = deprecated_names(
    __name__, {"LockAcquireTimeout": "LockTimeout", "LockNotOwned": "LockLost"}, "0.2.0"
)
