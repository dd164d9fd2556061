"""Reply transforms and argument helpers shared by every client flavour (sync, async, pipeline).

Replies arrive as redis-py returns them with RESP2 and its default response callbacks: bytes for
bulk strings, ints, and a few parsed shapes (SET -> bool, SMEMBERS -> set, HGETALL -> dict,
ZSCORE/ZINCRBY -> float). Every transform here accepts exactly those shapes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any, cast

from im_infra.cache.errors import CacheError, SerializationError

Transform = Callable[[Any], Any] | None


def text(reply: Any) -> str | None:
    """Bulk string -> str (UTF-8), nil -> None."""
    if reply is None:
        return None
    try:
        return reply.decode()  # type: ignore[no-any-return]
    except UnicodeDecodeError as exc:
        raise SerializationError(
            "value is not UTF-8 text (read it with the *_bytes method)"
        ) from exc
    except AttributeError:
        return str(reply)


def text_list(reply: Any) -> list[str | None]:
    """Array of bulk strings -> list of str/None."""
    return [text(item) for item in reply]


# HKEYS, HVALS, LRANGE: arrays that never hold a nil (the same function, typed so)
text_items = cast("Callable[[Any], list[str]]", text_list)


def text_set(reply: Any) -> set[str]:
    """Array/set of bulk strings -> set of str."""
    return {item.decode() for item in reply}


def text_dict(reply: Any) -> dict[str, str]:
    """HGETALL's dict of bytes -> dict of str."""
    return {k.decode(): v.decode() for k, v in reply.items()}


def to_bool(reply: Any) -> bool:
    """Integer 1/0, OK/True/None -> bool."""
    return bool(reply)


def to_int(reply: Any) -> int:
    """Integer reply -> int."""
    return int(reply)


def to_float(reply: Any) -> float:
    """Number (or bulk string number) -> float."""
    return float(reply)


def opt_float(reply: Any) -> float | None:
    """Number or nil -> float/None."""
    return None if reply is None else float(reply)


def opt_int(reply: Any) -> int | None:
    """Integer or nil -> int/None."""
    return None if reply is None else int(reply)


def pttl(reply: Any) -> float:
    """PTTL -> seconds; -1.0 (no expiry) and -2.0 (no key) pass through as Redis defines them."""
    ms = int(reply)
    return float(ms) if ms < 0 else ms / 1000.0


def score_pairs(reply: Any) -> list[tuple[str, float]]:
    """Flat [member, score, member, score, ...] -> [(member, score), ...]."""
    it = iter(reply)
    return [(m.decode(), float(s)) for m, s in zip(it, it, strict=True)]


def decode_any(reply: Any) -> Any:
    """Script replies: bytes -> str where valid UTF-8 (else bytes), recursively through lists."""
    if isinstance(reply, bytes):
        try:
            return reply.decode()
        except UnicodeDecodeError:
            return reply
    if isinstance(reply, list):
        return [decode_any(item) for item in reply]
    return reply


def milliseconds(duration: float | timedelta) -> int:
    """Seconds (or timedelta) -> whole milliseconds, at least 1."""
    seconds = duration.total_seconds() if isinstance(duration, timedelta) else float(duration)
    if seconds <= 0:
        raise CacheError(f"duration must be positive, got {seconds!r} s")
    return max(1, round(seconds * 1000))


def flatten_pairs(mapping: Iterable[tuple[Any, Any]]) -> list[Any]:
    """[(a, 1), (b, 2)] -> [a, 1, b, 2]."""
    out: list[Any] = []
    for k, v in mapping:
        out.append(k)
        out.append(v)
    return out
