"""Go-style durations in configuration: :func:`parse_duration` and the pydantic type ``Duration``.

The Go originals configure timeouts as ``time.Duration`` (``"5s"``, ``"200ms"``, ``"1m30s"``);
Python components take float seconds. Every component's config model uses ``Duration`` for such
fields, so one document accepts the same spellings everywhere::

    from pydantic import BaseModel, Field
    from typing import Annotated
    from im_infra import coord

    class RedisConfig(BaseModel):
        read_timeout: coord.Duration = 3.0                      # seconds, >= 0
        min_backoff: Annotated[coord.Duration, Field(gt=0)] = 0.008   # add bounds as usual

    RedisConfig(read_timeout="250ms").read_timeout == 0.25

Accepted (``parse_duration``):

- a number of seconds: ``1.5``, ``3``, or a string of one: ``"1.5"``, ``"2"``, ``"1e-3"``;
- a Go duration string: an optional sign, then one or more ``<number><unit>`` parts, units
  ``ns``, ``us`` (also ``µs``/``μs``), ``ms``, ``s``, ``m``, ``h``: ``"200ms"``, ``"1.5s"``,
  ``"1m30s"``, ``"1h2m3.5s"``, ``".5s"``, ``"-3s"``; whitespace around the value and between a
  number and its unit is ignored (``" 5 s "``);
- a :class:`datetime.timedelta`.

Rejected with a message saying what is wrong: anything else, including ``""``, a number without
a unit inside a Go string (``"1m30"``), unknown units (``"5x"``, ``"2d"``), ``inf``/``nan`` and
booleans (``true`` in YAML is not a duration).
"""

from __future__ import annotations

import math
import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, Field

__all__ = ["Duration", "parse_duration"]

_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "\u00b5s": 1e-6,  # micro sign, as Go accepts
    "\u03bcs": 1e-6,  # Greek small letter mu, as Go accepts
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_UNIT_NAMES = "ns, us, ms, s, m, h"
_SECONDS = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_NUMBER = re.compile(r"\d+(?:\.\d*)?|\.\d+")
_UNIT = re.compile(r"\s*(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")
_HINT = "use seconds (1.5) or a Go duration such as 200ms, 5s, 1m30s"


def parse_duration(value: str | float | timedelta) -> float:
    """The duration ``value`` in seconds: a number of seconds, a Go duration string such as
    ``"200ms"`` or ``"1m30s"``, or a :class:`~datetime.timedelta` (see the module docstring).

    Raises :class:`ValueError` for a malformed or non-finite duration and :class:`TypeError`
    for a value of another type (``bool`` included). Negative durations are returned as such;
    :data:`Duration` rejects them.
    """
    if isinstance(value, bool):
        raise TypeError(f"expected a duration, got a boolean ({value!r}); {_HINT}")
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, int | float):
        seconds = float(value)
        if not math.isfinite(seconds):
            raise ValueError(f"duration must be finite, got {value!r}")
        return seconds
    if not isinstance(value, str):
        raise TypeError(f"expected a duration, got {type(value).__name__}; {_HINT}")
    return _parse_text(value)


def _parse_text(value: str) -> float:
    text = value.strip()
    if not text:
        raise ValueError(f"empty duration; {_HINT}")
    if _SECONDS.fullmatch(text):
        return _finite(float(text), value)
    sign, pos = 1.0, 0
    if text[0] in "+-":
        sign, pos = (-1.0 if text[0] == "-" else 1.0), 1
    if pos == len(text):
        raise ValueError(f"invalid duration {value!r}: no number after the sign; {_HINT}")
    total = 0.0
    while pos < len(text):
        number = _NUMBER.match(text, pos)
        if number is None:
            raise ValueError(
                f"invalid duration {value!r}: expected a number at {text[pos:]!r}; {_HINT}"
            )
        unit = _UNIT.match(text, number.end())
        if unit is None:
            rest = text[number.end() :].strip()
            problem = f"unknown unit in {rest!r}" if rest else "missing unit"
            raise ValueError(
                f"invalid duration {value!r}: {problem} after {number.group()!r} "
                f"(units: {_UNIT_NAMES})"
            )
        total += float(number.group()) * _UNITS[unit.group(1)]
        pos = unit.end()
    return _finite(sign * total, value)


def _finite(seconds: float, value: str) -> float:
    if not math.isfinite(seconds):
        raise ValueError(f"duration {value!r} is too large")
    return seconds


def _validate(value: Any) -> Any:
    if value is None:
        return value  # pydantic reports the missing value (or ``Duration | None`` accepts it)
    try:
        return parse_duration(value)
    except TypeError as exc:  # pydantic turns only ValueError into a validation error
        raise ValueError(str(exc)) from None


Duration = Annotated[float, BeforeValidator(_validate), Field(ge=0)]
"""A pydantic field type: non-negative seconds (float), given as anything :func:`parse_duration`
accepts. Add bounds with ``Annotated[Duration, Field(gt=0)]``."""
