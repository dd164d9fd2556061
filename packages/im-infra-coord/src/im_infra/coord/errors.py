"""Exceptions raised by im_infra.coord.

Every error raised by this package derives from :class:`CoordError`; errors from the etcd client
library and gRPC are translated at the boundary (``raise ... from exc``) and never leak raw.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "ConfigError",
    "CoordError",
    "CoordUnavailable",
    "InstanceIdExhausted",
    "LockLost",
    "LockTimeout",
    "NoInstanceAvailable",
    "TLSError",
]


class CoordError(Exception):
    """Base class of every error raised by im_infra.coord."""


class CoordUnavailable(CoordError):  # noqa: N818 (names fixed by the shared contract)
    """No etcd endpoint answered within the timeout (all down, unreachable or too slow)."""


class TLSError(CoordUnavailable):
    """No endpoint could be reached because the TLS handshake failed: the server certificate is
    not signed by ``ca_cert`` or does not name the endpoint's host, or the client certificate was
    refused. The message says "TLS certificate problem" and what the handshake reported."""


class AuthenticationError(CoordError):
    """etcd rejected the username/password, or the user lacks permission for the operation."""


class ConfigError(CoordError):
    """A config document or setting is invalid (names the document, field and problem)."""


class LockTimeout(CoordError, TimeoutError):  # noqa: N818 (names fixed by the shared contract)
    """A blocking lock acquisition did not get the lock within its timeout (also the builtin
    ``TimeoutError``, as cache's ``LockTimeout``)."""


class LockLost(CoordError):  # noqa: N818 (names fixed by the shared contract)
    """The lease backing a held lock was lost: the critical section is no longer protected."""


class InstanceIdExhausted(CoordError):  # noqa: N818 (names fixed by the shared contract)
    """Every instance ID in [0, max_id] is held by a live instance of the service."""


class NoInstanceAvailable(CoordError):  # noqa: N818 (names fixed by the shared contract)
    """``pick()``/``discover()`` found no live instance of the requested service."""
