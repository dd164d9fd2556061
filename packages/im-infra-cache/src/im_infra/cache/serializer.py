"""Value serializers.

How a value is stored:

* ``bytes`` and ``str`` are stored as they are (``str`` as UTF-8); ``int`` and ``float`` as their
  decimal text (what Redis' INCR/INCRBYFLOAT understand). ``bool`` is not a number here: it goes
  through the serializer.
* Anything else goes through the cache's :class:`Serializer` (``dumps``), JSON by default.

Reads return text (``get``), raw bytes (``get_bytes``) or the serializer's ``loads`` of the stored
bytes (``get_obj``); the serializer is pluggable per cache (``cache.new(..., serializer=...)``).
"""

from __future__ import annotations

import json
import pickle
from typing import Any, Protocol, runtime_checkable

from im_infra.cache.errors import SerializationError

__all__ = ["JsonSerializer", "PickleSerializer", "Serializer", "get_serializer"]


@runtime_checkable
class Serializer(Protocol):
    """Turns a Python object into bytes and back."""

    def dumps(self, value: Any) -> bytes:
        """Serialize ``value``; raise any exception on failure (it is wrapped)."""
        ...

    def loads(self, data: bytes) -> Any:
        """Deserialize bytes produced by :meth:`dumps`."""
        ...


class JsonSerializer:
    """Compact UTF-8 JSON (the default): interoperable with services in other languages."""

    def dumps(self, value: Any) -> bytes:
        """Serialize ``value`` to compact JSON."""
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()

    def loads(self, data: bytes) -> Any:
        """Parse JSON."""
        return json.loads(data)


class PickleSerializer:
    """Python pickle: any picklable object, Python-only. Never use with untrusted Redis data."""

    def dumps(self, value: Any) -> bytes:
        """Pickle ``value`` with the highest protocol."""
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)

    def loads(self, data: bytes) -> Any:
        """Unpickle."""
        return pickle.loads(data)  # noqa: S301 - documented: trusted data only


def get_serializer(name: str) -> Serializer:
    """The built-in serializer called ``name`` (``json`` or ``pickle``)."""
    if name == "json":
        return JsonSerializer()
    if name == "pickle":
        return PickleSerializer()
    raise SerializationError(f"unknown serializer {name!r} (json, pickle)")
