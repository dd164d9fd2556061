"""Go-style durations ("200ms", "1m30s") for configuration fields, as float seconds."""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


def parse_duration(value: object) -> object:
    """Turn ``"200ms"``, ``"1h30m"``, ``1.5`` (seconds) or a timedelta into float seconds.

    Anything else is returned unchanged so that pydantic reports the type problem itself.
    """
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return float(value)
    if not isinstance(value, str):
        return value
    text = value.strip()
    if not text:
        raise ValueError("empty duration")
    try:
        return float(text)
    except ValueError:
        pass
    sign = 1.0
    if text[0] in "+-":
        sign = -1.0 if text[0] == "-" else 1.0
        text = text[1:]
    pos = 0
    total = 0.0
    while pos < len(text):
        match = _PART.match(text, pos)
        if match is None:
            raise ValueError(
                f"invalid duration {value!r}: use seconds (1.5) or Go form like 200ms, 5s, 1m30s"
            )
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    return sign * total
