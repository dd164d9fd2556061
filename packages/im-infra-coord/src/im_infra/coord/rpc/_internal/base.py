"""What the blocking and the asyncio balanced channel share: options, pool, registry watch."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, ClassVar, Generic, TypedDict, TypeVar

import grpc

from im_infra.coord.protocols import ServiceRegistry
from im_infra.coord.rpc._internal.pool import (
    READY,
    C,
    Endpoint,
    Method,
    Pool,
    RetryPolicy,
    metadata_filter,
)
from im_infra.coord.rpc.balancer import Balancer, make_balancer
from im_infra.coord.types import ServiceInstance

__all__ = ["BalancedBase", "ChannelOptions"]

_KINDS = ("unary_unary", "unary_stream", "stream_unary", "stream_stream")

UU = TypeVar("UU")
US = TypeVar("US")
SU = TypeVar("SU")
SS = TypeVar("SS")


class ChannelOptions(TypedDict, total=False):
    """The keyword arguments of ``rpc.channel()`` / ``rpc.aio_channel()``."""

    balancer: str | Balancer
    filters: Callable[[ServiceInstance], bool] | dict[str, str] | None
    idempotent: bool | Iterable[str]
    max_attempts: int
    retry_codes: Iterable[grpc.StatusCode]
    credentials: grpc.ChannelCredentials | None
    options: Iterable[tuple[str, Any]] | None


class BalancedBase(Generic[C, UU, US, SU, SS]):
    """Builds the pool from the options, follows the registry and makes the multicallables;
    the drivers open, watch and close the subchannels (``_open``, ``_watch_endpoint``,
    ``_close_endpoint``), receive the registry's lists (``_on_instances``) and name their
    multicallable classes (unary-unary, unary-stream, stream-unary, stream-stream: the types
    UU, US, SU, SS)."""

    _multicallables: ClassVar[tuple[type[Method[Any]], ...]]

    def __init__(self, registry: ServiceRegistry, service: str, options: ChannelOptions) -> None:
        unknown = set(options) - set(ChannelOptions.__annotations__)
        if unknown:
            raise TypeError(f"unexpected channel options: {', '.join(sorted(unknown))}")
        self.service = service
        self._credentials = options.get("credentials")
        self._options = list(options.get("options") or ())
        self._policy = RetryPolicy(
            options.get("max_attempts", 3),
            options.get("idempotent", ()),
            options.get("retry_codes", (grpc.StatusCode.UNAVAILABLE,)),
        )
        self._pool: Pool[C] = Pool(
            service,
            make_balancer(options.get("balancer", "round_robin")),
            metadata_filter(options.get("filters")),
            self._open,
            self._close_endpoint,
            self._watch_endpoint,
        )
        self._watch = registry.watch(service, self._on_instances)

    def _open(self, instance: ServiceInstance) -> C:
        raise NotImplementedError

    def _watch_endpoint(self, ep: Endpoint[C]) -> None:
        raise NotImplementedError

    def _close_endpoint(self, ep: Endpoint[C]) -> None:
        raise NotImplementedError

    def _on_instances(self, instances: list[ServiceInstance]) -> None:
        raise NotImplementedError

    def _method(self, index: int, method: str, ser: Any, deser: Any, registered: Any) -> Any:
        """The multicallable of kind ``index`` (see ``_KINDS``) for ``method``."""
        cls = self._multicallables[index]
        return cls(self._pool, self._policy, _KINDS[index], method, ser, deser, bool(registered))

    # the grpc Channel API (the blocking and the asyncio one have the same factories)
    def unary_unary(
        self,
        method: str,
        request_serializer: Callable[[Any], bytes] | None = None,
        response_deserializer: Callable[[bytes], Any] | None = None,
        _registered_method: bool | None = False,
    ) -> UU:
        ser, deser, reg = request_serializer, response_deserializer, _registered_method
        made: UU = self._method(0, method, ser, deser, reg)
        return made

    def unary_stream(
        self,
        method: str,
        request_serializer: Callable[[Any], bytes] | None = None,
        response_deserializer: Callable[[bytes], Any] | None = None,
        _registered_method: bool | None = False,
    ) -> US:
        ser, deser, reg = request_serializer, response_deserializer, _registered_method
        made: US = self._method(1, method, ser, deser, reg)
        return made

    def stream_unary(
        self,
        method: str,
        request_serializer: Callable[[Any], bytes] | None = None,
        response_deserializer: Callable[[bytes], Any] | None = None,
        _registered_method: bool | None = False,
    ) -> SU:
        ser, deser, reg = request_serializer, response_deserializer, _registered_method
        made: SU = self._method(2, method, ser, deser, reg)
        return made

    def stream_stream(
        self,
        method: str,
        request_serializer: Callable[[Any], bytes] | None = None,
        response_deserializer: Callable[[bytes], Any] | None = None,
        _registered_method: bool | None = False,
    ) -> SS:
        ser, deser, reg = request_serializer, response_deserializer, _registered_method
        made: SS = self._method(3, method, ser, deser, reg)
        return made

    def _connectivity(self) -> grpc.ChannelConnectivity:
        """READY when any instance is, CONNECTING while some connect, TRANSIENT_FAILURE when
        all fail, IDLE when none is registered."""
        states = [ep.state for ep in self._pool.endpoints()]
        if READY in states:
            return grpc.ChannelConnectivity.READY
        if any(s < READY for s in states):
            return grpc.ChannelConnectivity.CONNECTING
        if states:
            return grpc.ChannelConnectivity.TRANSIENT_FAILURE
        return grpc.ChannelConnectivity.IDLE

    def instances(self) -> list[ServiceInstance]:
        """The instances calls are spread over now (after the filters)."""
        return [ep.instance for ep in self._pool.endpoints()]

    def ready_instances(self) -> list[ServiceInstance]:
        """The instances whose connection is READY now."""
        return [ep.instance for ep in self._pool.endpoints() if ep.state == READY]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.service!r}, instances={len(self.instances())})"
