"""Validation of the arguments the caller passes (keys, values): bad input becomes a
CacheArgumentError naming the argument instead of a TypeError / UnicodeEncodeError from deep
inside redis-py. The checks cost nothing on the normal path: they run when building a key fails
or when redis-py could not encode a command."""

from __future__ import annotations

from typing import Any

from im_infra.cache.errors import CacheArgumentError


class KeyPrefix(str):
    """The cache's key prefix. ``prefix + key`` with a key that is not a ``str`` raises
    CacheArgumentError (a plain ``str`` would raise TypeError)."""

    __slots__ = ()

    def __add__(self, key: str, _concat: Any = str.__add__) -> str:
        try:  # (on every command: str's own concatenation, no isinstance first)
            return _concat(self, key)  # type: ignore[no-any-return]
        except TypeError:
            raise CacheArgumentError(f"key must be a str, not {type(key).__name__}") from None


def _encodable(value: Any) -> bool:
    if not isinstance(value, str):
        return True
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def unencodable(
    command: object, args: tuple[Any, ...], exc: UnicodeEncodeError
) -> CacheArgumentError:
    """The error for a command redis-py could not encode as UTF-8: names the key or the position
    of the argument (never its value)."""
    name = command.decode() if isinstance(command, bytes) else str(command)
    bad = [i for i, a in enumerate(args[1:], start=1) if not _encodable(a)]
    what = "the key" if bad[:1] == [1] else f"argument {bad[0]}" if bad else "an argument"
    return CacheArgumentError(
        f"redis {name}: {what} is not encodable as UTF-8 ({exc.reason}); keys and text values"
        " must be valid Unicode without lone surrogates"
    )
