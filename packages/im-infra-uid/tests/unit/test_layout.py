"""Layout constants, parse() and compose()."""

from __future__ import annotations

import datetime as dt

import pytest

from im_infra import uid


def test_bit_layout_constants() -> None:
    assert uid.TIMESTAMP_BITS + uid.WORKER_BITS + uid.SEQUENCE_BITS == 63
    assert uid.MAX_WORKER_ID == 1023
    assert uid.MAX_SEQUENCE == 4095
    assert uid.MAX_ID == 2**63 - 1
    assert dt.datetime.fromtimestamp(uid.DEFAULT_EPOCH_MS / 1000, tz=dt.UTC) == dt.datetime(
        2024, 1, 1, tzinfo=dt.UTC
    )


def test_parse_splits_the_fields() -> None:
    offset = 123_456_789
    value = (offset << 22) | (1023 << 12) | 4095
    parsed = uid.parse(value)
    assert parsed == (uid.DEFAULT_EPOCH_MS + offset, 1023, 4095)
    assert parsed.timestamp_ms == uid.DEFAULT_EPOCH_MS + offset
    assert parsed.worker == 1023
    assert parsed.sequence == 4095


def test_parse_with_custom_epoch_and_datetime() -> None:
    epoch = 1_288_834_974_657  # Twitter's epoch
    value = (1000 << 22) | (3 << 12) | 7
    parsed = uid.parse(value, epoch_ms=epoch)
    assert parsed == uid.ParsedID(epoch + 1000, 3, 7)
    assert parsed.datetime == dt.datetime.fromtimestamp((epoch + 1000) / 1000, tz=dt.UTC)


@pytest.mark.parametrize(
    ("timestamp_ms", "worker", "sequence"),
    [
        (uid.DEFAULT_EPOCH_MS, 0, 0),
        (uid.DEFAULT_EPOCH_MS + uid.MAX_TIMESTAMP_MS, 1023, 4095),
        (1_767_225_600_123, 512, 17),
    ],
)
def test_compose_is_the_inverse_of_parse(timestamp_ms: int, worker: int, sequence: int) -> None:
    value = uid.compose(timestamp_ms, worker, sequence)
    assert 0 <= value <= uid.MAX_ID
    assert uid.parse(value) == (timestamp_ms, worker, sequence)


def test_compose_extremes() -> None:
    assert uid.compose(uid.DEFAULT_EPOCH_MS, 0, 0) == 0
    assert uid.compose(uid.DEFAULT_EPOCH_MS + uid.MAX_TIMESTAMP_MS, 1023, 4095) == uid.MAX_ID


@pytest.mark.parametrize("bad", [-1, 2**63, "12", 1.0, True, None])
def test_parse_rejects_non_ids(bad: object) -> None:
    with pytest.raises(uid.InvalidId, match="Snowflake ID") as info:
        uid.parse(bad)  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, uid.UIDError)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((uid.DEFAULT_EPOCH_MS - 1, 0, 0), "timestamp_ms must be within"),
        ((uid.DEFAULT_EPOCH_MS + uid.MAX_TIMESTAMP_MS + 1, 0, 0), "timestamp_ms must be within"),
        ((uid.DEFAULT_EPOCH_MS, 1024, 0), r"0\.\.1023"),
        ((uid.DEFAULT_EPOCH_MS, 0, 4096), r"0\.\.4095"),
        ((uid.DEFAULT_EPOCH_MS, 0, -1), r"0\.\.4095"),
        ((float(uid.DEFAULT_EPOCH_MS), 0, 0), "timestamp_ms must be an int"),
    ],
)
def test_compose_rejects_out_of_range_fields(args: tuple[int, int, int], match: str) -> None:
    with pytest.raises(uid.InvalidArgument, match=match):
        uid.compose(*args)


def test_parse_rejects_a_bad_epoch() -> None:
    with pytest.raises(uid.InvalidArgument, match="epoch_ms"):
        uid.parse(1, epoch_ms=-5)
