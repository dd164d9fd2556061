"""coord.parse_duration and the coord.Duration field type."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

import pytest
from pydantic import BaseModel, Field, ValidationError

from im_infra import coord
from im_infra.coord import Duration, parse_duration


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [
        # seconds as numbers or numeric strings
        (3, 3.0),
        (0.25, 0.25),
        (0, 0.0),
        ("2", 2.0),
        ("2.5", 2.5),
        (" 1.5 ", 1.5),
        ("1e-3", 0.001),
        ("+4", 4.0),
        # Go durations
        ("200ms", 0.2),
        ("1.5s", 1.5),
        ("1m30s", 90.0),
        ("1h", 3600.0),
        ("1h2m3.5s", 3723.5),
        ("250us", 0.00025),
        ("250\u00b5s", 0.00025),
        ("250\u03bcs", 0.00025),
        ("100ns", 1e-7),
        (".5s", 0.5),
        ("5.s", 5.0),
        ("0s", 0.0),
        ("-3s", -3.0),
        ("+1m", 60.0),
        ("-1m30s", -90.0),
        # spaced forms the cache config accepted
        ("5 s", 5.0),
        ("  500ms\n", 0.5),
        # timedelta
        (timedelta(milliseconds=20), 0.02),
        (timedelta(minutes=2), 120.0),
    ],
)
def test_accepted(raw: Any, seconds: float) -> None:
    assert parse_duration(raw) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("", "empty duration"),
        ("   ", "empty duration"),
        ("fast", "expected a number at 'fast'"),
        ("5x", "unknown unit in 'x' after '5'"),
        ("2d", "unknown unit in 'd' after '2'"),
        ("10 parsecs", "unknown unit in 'parsecs' after '10'"),
        ("1m30", "missing unit after '30'"),
        ("1m 30s", "expected a number at ' 30s'"),
        ("-", "no number after the sign"),
        ("inf", "expected a number at 'inf'"),
        ("nan", "expected a number at 'nan'"),
        ("1e400", "too large"),
        (float("inf"), "must be finite"),
        (float("nan"), "must be finite"),
    ],
)
def test_rejected_with_a_clear_message(raw: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        parse_duration(raw)
    if isinstance(raw, str) and raw.strip():
        assert repr(raw) in str(info.value)


def test_syntax_errors_show_the_accepted_forms() -> None:
    with pytest.raises(ValueError, match=r"use seconds .* such as 200ms, 5s, 1m30s"):
        parse_duration("soon")
    with pytest.raises(ValueError, match=r"units: ns, us, ms, s, m, h"):
        parse_duration("3 weeks")


@pytest.mark.parametrize("raw", [True, False, None, [1], {"s": 1}, b"5s"])
def test_other_types_are_a_type_error(raw: Any) -> None:
    with pytest.raises(TypeError, match="expected a duration"):
        parse_duration(raw)


class Timeouts(BaseModel):
    read: Duration = 3.0
    backoff: Annotated[Duration, Field(gt=0)] = 0.008
    idle: Duration | None = None


def test_field_type() -> None:
    cfg = Timeouts.model_validate({"read": "250ms", "backoff": "1ms", "idle": "1m"})
    assert cfg.read == pytest.approx(0.25)
    assert cfg.backoff == pytest.approx(0.001)
    assert cfg.idle == 60.0
    assert Timeouts(read=timedelta(seconds=2)).read == 2.0  # type: ignore[arg-type]
    assert Timeouts(idle=None).idle is None
    assert Timeouts.model_validate(cfg.model_dump()) == cfg  # dumps as float seconds
    assert Timeouts(read=0).read == 0.0


@pytest.mark.parametrize(
    ("field", "raw", "message"),
    [
        ("read", "-1s", "greater than or equal to 0"),
        ("backoff", "0s", "greater than 0"),
        ("read", "5x", "unknown unit"),
        ("read", True, "got a boolean"),
        ("read", [1], "got list"),
        ("read", None, "valid number"),
    ],
)
def test_field_errors_name_the_field(field: str, raw: Any, message: str) -> None:
    with pytest.raises(ValidationError, match=message) as info:
        Timeouts.model_validate({field: raw})
    assert info.value.errors()[0]["loc"] == (field,)


def test_exported() -> None:
    assert coord.parse_duration is parse_duration
    assert coord.Duration is Duration
    assert {"Duration", "parse_duration"} <= set(coord.__all__)
