"""im_infra.uid: Snowflake 64-bit IDs with the worker ID allocated by coord, and UUID v7.

::

    from im_infra import uid

    gen = uid.new_generator(7)            # worker ID 7 (0..1023)
    i = gen.next_id()                     # 63-bit int, strictly increasing
    batch = gen.next_ids(1000)
    uid.parse(i)                          # ParsedID(timestamp_ms=..., worker=7, sequence=...)

    gen = uid.from_coord(provider, "im-logic")   # worker ID from coord's instance allocator
    uid.uuid7()                                  # uuid.UUID, version 7, monotonic
"""

from typing import Any

from im_infra.uid import coordinated as _coordinated
from im_infra.uid.coordinated import from_coord
from im_infra.uid.errors import (
    ClockMovedBackwards,
    GeneratorClosed,
    GeneratorForked,
    InvalidArgument,
    InvalidId,
    InvalidWorkerId,
    TimestampOutOfRange,
    UIDError,
    WorkerIdLost,
    WorkerIdUnavailable,
)
from im_infra.uid.generator import Clock, Generator, Sleep, SnowflakeGenerator, new_generator
from im_infra.uid.layout import (
    DEFAULT_EPOCH_MS,
    MAX_ID,
    MAX_SEQUENCE,
    MAX_TIMESTAMP_MS,
    MAX_WORKER_ID,
    SEQUENCE_BITS,
    TIMESTAMP_BITS,
    WORKER_BITS,
    ParsedID,
    compose,
    parse,
)
from im_infra.uid.uuidv7 import UUID7Source, uuid7

__all__ = [
    "DEFAULT_EPOCH_MS",
    "MAX_ID",
    "MAX_SEQUENCE",
    "MAX_TIMESTAMP_MS",
    "MAX_WORKER_ID",
    "SEQUENCE_BITS",
    "TIMESTAMP_BITS",
    "WORKER_BITS",
    "Clock",
    "ClockMovedBackwards",
    "Generator",
    "GeneratorClosed",
    "GeneratorForked",
    "InvalidArgument",
    "InvalidId",
    "InvalidWorkerId",
    "ParsedID",
    "Sleep",
    "SnowflakeGenerator",
    "TimestampOutOfRange",
    "UIDError",
    "UUID7Source",
    "WorkerIdLost",
    "WorkerIdUnavailable",
    "compose",
    "from_coord",
    "new_generator",
    "parse",
    "uuid7",
]


def __getattr__(name: str) -> Any:
    """The deprecated names (``InstancerLike``, ``ProviderLike``): see ``coordinated``."""
    return getattr(_coordinated, name)
