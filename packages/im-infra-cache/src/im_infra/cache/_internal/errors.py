"""Translation of redis-py exceptions into im_infra.cache errors (the only place that does it)."""

from __future__ import annotations

import ssl

from redis import exceptions as rex

from im_infra.cache import errors as e
from im_infra.cache._internal.retry import may_have_run
from im_infra.coord import redact_secrets

BACKEND_ERRORS = (rex.RedisError, rex.RedisClusterException)
"""What redis-py raises (RedisClusterException is not a RedisError)."""


def tls_problem(exc: BaseException) -> str | None:
    """What failed in the TLS layer under a redis-py error, or None when TLS is not the cause.

    redis-py raises ``ConnectionError`` with the ``ssl`` error as its cause or context.
    """
    cause: BaseException | None = exc
    for _ in range(5):
        if cause is None:
            return None
        if isinstance(cause, ssl.SSLCertVerificationError):
            return (
                f"TLS certificate problem: {cause.verify_message or cause.reason} (check "
                "tls.caCert and that the host name is one the server certificate names)"
            )
        if isinstance(cause, ssl.SSLError):
            reason = str(cause.reason or cause).lower().replace("_", " ")
            what = "TLS certificate problem" if "certificate" in reason else "TLS failure"
            return f"{what}: {reason} (check tls.caCert, tls.certFile and tls.keyFile)"
        cause = cause.__cause__ or cause.__context__
    return None


def translate(
    exc: BaseException, command: object, secrets: tuple[str, ...], *, unsafe: bool = False
) -> e.CacheError:
    """The CacheError for a redis-py exception raised while running ``command`` (no arguments or
    values are ever put in the message). ``unsafe``: the command is not safe to repeat, so a
    failure after it may have been sent is a CacheOutcomeUnknown."""
    name = command.decode() if isinstance(command, bytes) else str(command)
    detail = redact_secrets(str(exc) or type(exc).__name__, secrets)
    if unsafe and may_have_run(exc):
        return e.CacheOutcomeUnknown(
            f"redis {name}: outcome unknown, the command may have run and was not retried"
            f" ({detail})",
            timed_out=isinstance(exc, rex.TimeoutError),
        )
    upper = detail.upper()
    cls: type[e.CacheError]
    if isinstance(exc, rex.NoPermissionError) or upper.startswith("NOPERM"):
        cls = e.CachePermissionError
    elif isinstance(exc, rex.AuthenticationError | rex.AuthenticationWrongNumberOfArgsError) or (
        upper.startswith(("NOAUTH", "WRONGPASS"))
    ):
        cls = e.CacheAuthError
        detail = "authentication failed (check username/password)"
    elif (tls := tls_problem(exc)) is not None:
        cls, detail = e.CacheTLSError, tls
    elif isinstance(exc, rex.TimeoutError):
        cls = e.CacheTimeout
    elif isinstance(exc, rex.WatchError):
        cls = e.CacheWatchError
    elif isinstance(exc, rex.ConnectionError | rex.ClusterDownError | rex.RedisClusterException):
        cls = e.CacheUnavailable
    elif isinstance(exc, rex.ResponseError):
        cls = e.CacheResponseError
    elif isinstance(exc, rex.DataError):
        cls = e.SerializationError
    else:
        cls = e.CacheError
    return cls(f"redis {name}: {detail}")
