"""A module imported on first attribute access, not when the importing module loads.

coord's etcd client is built on grpcio and pyetcd's generated stubs: importing them costs tens of
milliseconds and loads grpc's C core. Every im-infra package imports coord (for the config
layering and its error types) but most processes that use cache, db, mq or uid without a coord
provider never talk to etcd, so ``import im_infra.coord`` must not import grpc: the etcd client
module refers to ``grpc`` and ``etcdrpc`` through this proxy, and the first use (building a
channel, catching ``grpc.RpcError``) imports them. ``importlib.import_module`` holds the import
lock, so concurrent first uses are safe (unlike ``importlib.util.LazyLoader`` before 3.12).
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class LazyModule:
    """Stands in for module ``name``; any attribute read imports it and reads from it."""

    __slots__ = ("_module", "_name")

    def __init__(self, name: str) -> None:
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attr: str) -> Any:
        module = self._module
        if module is None:
            module = importlib.import_module(self._name)
            self._module = module
        return getattr(module, attr)

    def __repr__(self) -> str:
        state = "imported" if self._module is not None else "not imported yet"
        return f"<LazyModule {self._name!r} ({state})>"
