"""coord's value types: plain data the Protocols (``protocols.py``) and the implementations
both speak, with no I/O and no client behind them."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from im_infra.coord._internal.documents import parse_document

__all__ = ["ConfigEntry", "ConfigEvent", "ServiceInstance"]


@dataclass(frozen=True)
class ServiceInstance:
    """One running instance of a service: ``name`` (the service), ``id`` (unique within it),
    ``address`` ("host:port", a URL...) and free-form string ``metadata``."""

    name: str
    id: str
    address: str
    metadata: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "name": self.name,
                "id": self.id,
                "address": self.address,
                "metadata": dict(self.metadata),
            },
            sort_keys=True,
        ).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> ServiceInstance:
        data = json.loads(raw)
        return cls(
            name=str(data["name"]),
            id=str(data["id"]),
            address=str(data["address"]),
            metadata={str(k): str(v) for k, v in dict(data.get("metadata") or {}).items()},
        )


@dataclass(frozen=True)
class ConfigEntry:
    """A stored document: its key (as passed, relative or absolute), raw bytes and revisions."""

    key: str
    value: bytes
    mod_revision: int
    create_revision: int
    version: int

    @property
    def text(self) -> str:
        return self.value.decode("utf-8")

    def document(self) -> dict[str, Any]:
        """The value parsed as YAML (JSON when the key ends in .json); ConfigError if malformed."""
        return parse_document(self.value, self.key)


@dataclass(frozen=True)
class ConfigEvent:
    """A change seen by ``ConfigManager.watch``; ``entry`` is None for a delete."""

    kind: Literal["put", "delete"]
    key: str
    entry: ConfigEntry | None
    revision: int
