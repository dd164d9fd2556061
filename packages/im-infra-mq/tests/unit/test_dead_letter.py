"""Dead-letter headers: written under the new names (and 0.1's for one version), read back."""

from __future__ import annotations

import pytest

from im_infra import mq
from im_infra.mq.dead_letter import dead_letter_headers


def _consumed() -> mq.Message:
    return mq.Message("orders", b"k", b"v", {"trace_id": b"t1"}, partition=3, offset=41)


def test_headers_round_trip() -> None:
    headers = dead_letter_headers(_consumed(), ValueError("bad " + "x" * 2000), attempts=4)
    assert headers["trace_id"] == b"t1"  # the message's own headers are kept
    info = mq.read_dead_letter(mq.Message("orders.dlq", headers=headers))
    assert info.original_topic == "orders"
    assert (info.original_partition, info.original_offset, info.attempts) == (3, 41, 4)
    assert info.error.startswith("ValueError: bad x")
    assert len(info.error) == 1000


def test_reads_the_names_0_1_wrote() -> None:
    old = {
        "dlq_topic": b"orders",
        "dlq_partition": b"0",
        "dlq_offset": b"7",
        "dlq_error": b"RuntimeError: boom",
    }
    info = mq.read_dead_letter(mq.Message("orders.dlq", headers=old))
    assert (info.original_topic, info.original_partition, info.original_offset) == ("orders", 0, 7)
    assert info.attempts is None
    assert info.error == "RuntimeError: boom"


def test_new_names_win_over_old_ones() -> None:
    headers = dead_letter_headers(_consumed(), RuntimeError("e"), attempts=1)
    headers["dlq_topic"] = b"stale"
    assert mq.read_dead_letter(mq.Message("x", headers=headers)).original_topic == "orders"


@pytest.mark.parametrize(
    ("headers", "match"),
    [
        ({}, "no dlq_original_topic header"),
        (
            {"dlq_original_topic": b"t", "dlq_original_partition": b"zero"},
            "dlq_original_partition is not a number",
        ),
    ],
)
def test_missing_or_malformed_header_is_a_typed_error(
    headers: dict[str, bytes], match: str
) -> None:
    with pytest.raises(mq.MQError, match=match):
        mq.read_dead_letter(mq.Message("x.dlq", headers=headers, offset=5))
