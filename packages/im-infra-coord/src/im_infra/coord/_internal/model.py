"""The etcd data model coord speaks, independent of the client library: keys and revisions,
transaction guards and operations, watch events and the watch-stream interface.

``etcd.py`` implements it over gRPC, ``memory.py`` in memory (coord.testing).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

from im_infra.coord.errors import CoordError

__all__ = [
    "Compare",
    "DeleteOp",
    "GetOp",
    "KeyValue",
    "Op",
    "PutOp",
    "RangeResult",
    "StreamBrokenError",
    "TxnResult",
    "WatchEvent",
    "WatchResponse",
    "WatchStream",
    "prefix_end",
]


@dataclass(frozen=True)
class KeyValue:
    """One key in etcd with its revisions."""

    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int


@dataclass(frozen=True)
class RangeResult:
    """Result of a range read: the keys and the store revision it was read at."""

    kvs: list[KeyValue]
    revision: int
    count: int


@dataclass(frozen=True)
class WatchEvent:
    """A change to one key; ``kind`` is "put" or "delete"."""

    kind: Literal["put", "delete"]
    kv: KeyValue


@dataclass(frozen=True)
class Compare:
    """A transaction guard: ``target`` of ``key`` compared with ``value``."""

    key: str
    target: Literal["create", "mod", "version", "value", "lease"]
    op: Literal["==", "!=", ">", "<"]
    value: int | bytes


@dataclass(frozen=True)
class PutOp:
    key: str
    value: bytes
    lease: int = 0


@dataclass(frozen=True)
class GetOp:
    """Read ``key``; with ``first_created``, the oldest key under the prefix ``key`` instead."""

    key: str
    first_created: bool = False


@dataclass(frozen=True)
class DeleteOp:
    key: str


Op = PutOp | GetOp | DeleteOp


@dataclass(frozen=True)
class TxnResult:
    """``succeeded`` tells which branch ran; ``responses`` has one entry per op of that branch
    (a list of KeyValue for a get, None for a put, the deleted count for a delete)."""

    succeeded: bool
    revision: int
    responses: list[list[KeyValue] | int | None] = field(default_factory=list)


def prefix_end(prefix: str) -> bytes:
    """The range_end that makes a range cover every key starting with ``prefix``."""
    raw = bytearray(prefix.encode())
    for i in reversed(range(len(raw))):
        if raw[i] < 0xFF:
            raw[i] += 1
            return bytes(raw[: i + 1])
    return b"\0"


@dataclass(frozen=True)
class WatchResponse:
    created: bool
    canceled: bool
    cancel_reason: str
    compact_revision: int
    revision: int
    events: list[WatchEvent]


class StreamBrokenError(CoordError):
    """A watch stream ended (endpoint down, network cut, cancelled)."""


class WatchStream:
    """One open watch stream: iterate :meth:`responses` until it raises StreamBrokenError;
    ``index``/``endpoint`` name the endpoint it runs on (for failover)."""

    index: int
    endpoint: str

    def responses(self) -> Iterator[WatchResponse]:
        """Yield each response; raises StreamBrokenError when the stream breaks."""
        raise NotImplementedError

    def cancel(self) -> None:
        """Stop the stream (idempotent, safe from any thread)."""
        raise NotImplementedError
