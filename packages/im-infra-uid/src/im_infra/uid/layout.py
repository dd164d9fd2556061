"""The 64-bit Snowflake layout: constants, :func:`parse` and :func:`compose`.

An ID is a non-negative 63-bit integer (the sign bit is always 0, so it fits a signed BIGINT)::

     63  62                                   22 21        12 11          0
    +---+---------------------------------------+------------+-------------+
    | 0 | 41-bit milliseconds since the epoch    | 10-bit     | 12-bit      |
    |   | (DEFAULT_EPOCH_MS = 2024-01-01 UTC)    | worker ID  | sequence    |
    +---+---------------------------------------+------------+-------------+

IDs from one generator are strictly increasing; IDs from different generators sort by time
first (k-sorted), which keeps B-tree inserts append-mostly.
"""

from __future__ import annotations

import datetime as _dt
from typing import NamedTuple

from im_infra.uid.errors import InvalidArgument, InvalidId, InvalidWorkerId

__all__ = [
    "DEFAULT_EPOCH_MS",
    "MAX_ID",
    "MAX_SEQUENCE",
    "MAX_TIMESTAMP_MS",
    "MAX_WORKER_ID",
    "SEQUENCE_BITS",
    "TIMESTAMP_BITS",
    "WORKER_BITS",
    "ParsedID",
    "compose",
    "parse",
]

#: The default custom epoch: 2024-01-01T00:00:00Z, in milliseconds since the Unix epoch.
#: With 41 timestamp bits, IDs can be generated until 2093-09-06T15:47:35.551Z.
DEFAULT_EPOCH_MS = 1_704_067_200_000

TIMESTAMP_BITS = 41
WORKER_BITS = 10
SEQUENCE_BITS = 12

WORKER_SHIFT = SEQUENCE_BITS
TIMESTAMP_SHIFT = WORKER_BITS + SEQUENCE_BITS

MAX_WORKER_ID = (1 << WORKER_BITS) - 1  # 1023
MAX_SEQUENCE = (1 << SEQUENCE_BITS) - 1  # 4095
MAX_TIMESTAMP_MS = (1 << TIMESTAMP_BITS) - 1  # milliseconds after the epoch
MAX_ID = (1 << (TIMESTAMP_BITS + WORKER_BITS + SEQUENCE_BITS)) - 1  # 2**63 - 1


class ParsedID(NamedTuple):
    """The three fields of a Snowflake ID, as returned by :func:`parse`."""

    timestamp_ms: int
    """Unix time in milliseconds (the epoch already added back)."""
    worker: int
    """Worker ID, 0..1023."""
    sequence: int
    """Sequence number within the millisecond, 0..4095."""

    @property
    def datetime(self) -> _dt.datetime:
        """The timestamp as an aware UTC :class:`datetime.datetime` (millisecond precision)."""
        return _dt.datetime.fromtimestamp(self.timestamp_ms / 1000, tz=_dt.UTC)


def is_plain_int(value: object) -> bool:
    """True for ``int`` values (and subclasses) but not ``bool``."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_worker_id(worker: object) -> int:
    """Return ``worker`` if it is a valid worker ID, else raise :class:`InvalidWorkerId`."""
    if not is_plain_int(worker):
        raise InvalidWorkerId(
            f"worker ID must be an int in the range 0..{MAX_WORKER_ID}, "
            f"got {type(worker).__name__} {worker!r}"
        )
    assert isinstance(worker, int)
    if not 0 <= worker <= MAX_WORKER_ID:
        raise InvalidWorkerId(f"worker ID must be in the range 0..{MAX_WORKER_ID}, got {worker}")
    return worker


def check_epoch_ms(epoch_ms: object) -> int:
    """Return ``epoch_ms`` if it is a usable epoch, else raise :class:`InvalidArgument`."""
    if not is_plain_int(epoch_ms) or epoch_ms < 0:  # type: ignore[operator]
        raise InvalidArgument(
            f"epoch_ms must be a non-negative int (Unix milliseconds), got {epoch_ms!r}"
        )
    assert isinstance(epoch_ms, int)
    return epoch_ms


def parse(id: int, *, epoch_ms: int = DEFAULT_EPOCH_MS) -> ParsedID:
    """Split a Snowflake ID into ``(timestamp_ms, worker, sequence)``.

    ``epoch_ms`` must be the epoch of the generator that made the ID (the default epoch unless
    the generator was created with another one). Raises :class:`InvalidId` (a ``ValueError``)
    when ``id`` is not an int in ``0..2**63-1``.
    """
    if not is_plain_int(id):
        raise InvalidId(f"a Snowflake ID must be an int, got {type(id).__name__} {id!r}")
    if not 0 <= id <= MAX_ID:
        raise InvalidId(f"a Snowflake ID must be in the range 0..{MAX_ID} (63 bits), got {id}")
    check_epoch_ms(epoch_ms)
    return ParsedID(
        (id >> TIMESTAMP_SHIFT) + epoch_ms,
        (id >> WORKER_SHIFT) & MAX_WORKER_ID,
        id & MAX_SEQUENCE,
    )


def compose(
    timestamp_ms: int, worker: int, sequence: int, *, epoch_ms: int = DEFAULT_EPOCH_MS
) -> int:
    """Build the ID with these fields (the inverse of :func:`parse`).

    Useful for range scans: ``compose(t, 0, 0)`` is the smallest ID any generator with this
    epoch can issue at or after Unix millisecond ``t``. Raises :class:`InvalidArgument`
    when a field is out of range.
    """
    check_epoch_ms(epoch_ms)
    check_worker_id(worker)
    if not is_plain_int(sequence) or not 0 <= sequence <= MAX_SEQUENCE:
        raise InvalidArgument(
            f"sequence must be an int in the range 0..{MAX_SEQUENCE}, got {sequence!r}"
        )
    if not is_plain_int(timestamp_ms):
        raise InvalidArgument(f"timestamp_ms must be an int, got {timestamp_ms!r}")
    offset = timestamp_ms - epoch_ms
    if not 0 <= offset <= MAX_TIMESTAMP_MS:
        raise InvalidArgument(
            f"timestamp_ms must be within {epoch_ms}..{epoch_ms + MAX_TIMESTAMP_MS} "
            f"(the epoch plus 41 bits of milliseconds), got {timestamp_ms}"
        )
    return (offset << TIMESTAMP_SHIFT) | (worker << WORKER_SHIFT) | sequence
