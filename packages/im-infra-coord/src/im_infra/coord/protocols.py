"""The seed's interfaces as ``typing.Protocol``s: business code types against these.

They sit below the implementations: at run time this module imports only coord's value types
(``types.py``) and the component declaration, never the etcd-backed modules."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

from pydantic import BaseModel

from im_infra.coord.component import Component
from im_infra.coord.types import ConfigEntry, ConfigEvent, ServiceInstance

if TYPE_CHECKING:  # the handles the implementations return (annotations only: no import cycle)
    from im_infra.coord.component_config import LiveConfig
    from im_infra.coord.config import ConfigWatch
    from im_infra.coord.lock import DistributedLock
    from im_infra.coord.registry import WatchHandle

M = TypeVar("M", bound=BaseModel)


@runtime_checkable
class Instancer(Protocol):
    """Allocates this process's instance ID (the seed's ``Instancer``)."""

    def instance_id(self) -> int:
        """The ID in [0, max_id], unique among the service's live instances; cached (the seed's
        ``GetInstanceID``)."""
        ...

    def on_lost(self, callback: Callable[[int], None]) -> None:
        """Call ``callback(id)`` from a background thread when the ID's lease is lost."""
        ...

    def release(self) -> None:
        """Give the ID back now (idempotent)."""
        ...

    @property
    def current_id(self) -> int | None:
        """The ID held right now, without allocating or doing I/O: None before the first
        :meth:`instance_id`, after :meth:`release` (or the provider's ``close()``), and from
        the instant the ID's lease counts as lost (even before the ``on_lost`` callbacks ran).
        Cheap enough to check before every use of the ID (uid's ``from_coord`` does, every
        millisecond)."""
        ...


@runtime_checkable
class ServiceRegistry(Protocol):
    """Service registration and discovery (the seed's ``ServiceRegistry``)."""

    def register(self, instance: ServiceInstance, *, ttl: int = ...) -> None: ...

    def deregister(
        self, instance: ServiceInstance | str, instance_id: str | None = None
    ) -> bool: ...

    def discover(self, name: str) -> list[ServiceInstance]: ...

    def watch(
        self, name: str, callback: Callable[[list[ServiceInstance]], None]
    ) -> WatchHandle: ...

    def pick(self, name: str) -> ServiceInstance: ...


@runtime_checkable
class ConfigManager(Protocol):
    """The config center (the seed's ``ConfigManager``) of one environment."""

    @property
    def env(self) -> str:
        """The environment whose documents this manager reads (``/im-infra/config/{env}/``)."""
        ...

    @property
    def service(self) -> str | None:
        """The service whose documents :meth:`component` reads by default."""
        ...

    def get(self, key: str) -> ConfigEntry | None: ...

    def get_document(self, key: str) -> dict[str, Any] | None: ...

    def set(self, key: str, value: str | bytes | Mapping[str, Any]) -> int: ...

    def delete(self, key: str) -> bool: ...

    def list(self, prefix: str = "") -> list[ConfigEntry]: ...

    def compare_and_set(
        self, key: str, value: str | bytes | Mapping[str, Any], expected_revision: int
    ) -> bool: ...

    def watch(
        self,
        key: str,
        callback: Callable[[ConfigEvent], None],
        *,
        prefix: bool = False,
        start_revision: int | None = None,
    ) -> ConfigWatch: ...

    def component(
        self,
        component: Component[M] | str,
        model: type[M] | None = None,
        *,
        service: str | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> LiveConfig[M]: ...


@runtime_checkable
class Locker(Protocol):
    """Distributed locks (the seed's ``Locker``), blocking and asyncio."""

    def acquire(
        self, name: str, *, ttl: float = ..., timeout: float | None = None
    ) -> DistributedLock: ...

    def try_acquire(self, name: str, *, ttl: float = ...) -> DistributedLock | None: ...

    async def acquire_async(
        self, name: str, *, ttl: float = ..., timeout: float | None = None
    ) -> DistributedLock: ...

    async def try_acquire_async(self, name: str, *, ttl: float = ...) -> DistributedLock | None: ...


@runtime_checkable
class Provider(Protocol):
    """The entry point of coord (the seed's ``Provider``)."""

    @property
    def registry(self) -> ServiceRegistry: ...

    @property
    def config(self) -> ConfigManager: ...

    @property
    def lock(self) -> Locker: ...

    @property
    def instance(self) -> Instancer: ...

    def instance_for(self, service: str, *, max_id: int = ..., sticky: bool = ...) -> Instancer: ...

    def new_instancer(
        self, service: str, *, max_id: int = ..., ttl: int = ..., sticky: bool = ...
    ) -> Instancer: ...

    def close(self) -> None: ...
