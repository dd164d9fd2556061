"""The server side: register a gRPC server by name, deregister-then-drain, and bind the trace.

::

    server = grpc.server(ThreadPoolExecutor(16), interceptors=[rpc.TraceServerInterceptor()])
    add_LogicServicer_to_server(Logic(), server)
    server.add_insecure_port("0.0.0.0:9000")
    server.start()
    reg = rpc.register_server(provider.registry, server, "im-logic", "10.0.0.5:9000",
                              metadata={"version": "v2", "zone": "eu-1"})
    ...
    reg.stop()   # 1. deregister  2. wait drain_delay  3. server.stop(grace): in-flight finish

The library installs no signal handler: call ``stop()`` from the application's own SIGTERM path.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar

import grpc
import grpc.aio

from im_infra.clog.lifecycle import Closing
from im_infra.coord._internal.log import log
from im_infra.coord.errors import ConfigError
from im_infra.coord.protocols import ServiceRegistry
from im_infra.coord.registry import DEFAULT_REGISTRATION_TTL
from im_infra.coord.rpc._internal.metrics import MethodMetrics, code_of, method_metrics
from im_infra.coord.rpc.context import bind_incoming
from im_infra.coord.types import ServiceInstance

__all__ = [
    "AioServerRegistration",
    "AioTraceServerInterceptor",
    "ServerRegistration",
    "TraceServerInterceptor",
    "register_aio_server",
    "register_server",
]

_log = log.named("rpc")

DEFAULT_DRAIN_DELAY = 1.0
DEFAULT_GRACE = 10.0

_MAKERS = {
    "unary_unary": grpc.unary_unary_rpc_method_handler,
    "unary_stream": grpc.unary_stream_rpc_method_handler,
    "stream_unary": grpc.stream_unary_rpc_method_handler,
    "stream_stream": grpc.stream_stream_rpc_method_handler,
}


_Wrap = Callable[[str, Callable[..., Any], MethodMetrics], Callable[..., Any]]
_OK = grpc.StatusCode.OK
_UNKNOWN = grpc.StatusCode.UNKNOWN


def _rewrap(
    handler: grpc.RpcMethodHandler[Any, Any] | None,
    wrap: _Wrap,
    details: grpc.HandlerCallDetails,
) -> Any:
    """``handler`` with its behaviour replaced by ``wrap(kind, behaviour, metrics)`` (no handler:
    an unknown method, answered UNIMPLEMENTED by grpc and not measured)."""
    if handler is None:
        return None
    for kind, make in _MAKERS.items():
        behaviour = getattr(handler, kind, None)
        if behaviour is not None:
            return make(
                wrap(kind, behaviour, method_metrics(details.method)),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
    return handler


def _status(context: Any, exc: BaseException | None) -> grpc.StatusCode:
    """The status a handler's call ends with: the code the handler set (``set_code``,
    ``abort``), else OK when it returned and UNKNOWN (or CANCELLED) when it raised."""
    code = context.code()
    if isinstance(code, int):  # grpc.aio answers the numeric code
        code = _CODES.get(code)
    if exc is None:
        return code if isinstance(code, grpc.StatusCode) else _OK
    if isinstance(code, grpc.StatusCode) and code is not _OK:
        return code
    return code_of(exc)


_CODES = {c.value[0]: c for c in grpc.StatusCode}


def _sync_wrap(kind: str, behaviour: Callable[..., Any], m: MethodMetrics) -> Callable[..., Any]:
    if kind.endswith("_stream"):

        def streaming(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            started, failure = time.perf_counter(), None
            try:
                with bind_incoming(context.invocation_metadata(), context.time_remaining()):
                    yield from behaviour(request, context)
            except BaseException as exc:
                failure = exc
                raise
            finally:
                m.server_call(started, _status(context, failure))

        return streaming

    def unary(request: Any, context: grpc.ServicerContext) -> Any:
        started, failure = time.perf_counter(), None
        try:
            with bind_incoming(context.invocation_metadata(), context.time_remaining()):
                return behaviour(request, context)
        except BaseException as exc:
            failure = exc
            raise
        finally:
            m.server_call(started, _status(context, failure))

    return unary


def _aio_wrap(kind: str, behaviour: Callable[..., Any], m: MethodMetrics) -> Callable[..., Any]:
    if inspect.isasyncgenfunction(behaviour):

        async def streaming(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            started, failure = time.perf_counter(), None
            try:
                with bind_incoming(context.invocation_metadata(), context.time_remaining()):
                    async for item in behaviour(request, context):
                        yield item
            except BaseException as exc:
                failure = exc
                raise
            finally:
                m.server_call(started, _status(context, failure))

        return streaming

    async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        started, failure = time.perf_counter(), None
        try:
            with bind_incoming(context.invocation_metadata(), context.time_remaining()):
                result = behaviour(request, context)
                if inspect.isawaitable(result):
                    result = await result
                return result
        except BaseException as exc:
            failure = exc
            raise
        finally:
            m.server_call(started, _status(context, failure))

    return call


class TraceServerInterceptor(grpc.ServerInterceptor):
    """Binds each incoming call's ``x-trace-id`` as the clog trace id (and its W3C trace
    context, and its deadline for the handler's own balanced calls) around the handler, and
    records each call's duration and status (``rpc.server.call.duration``)."""

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        return _rewrap(continuation(handler_call_details), _sync_wrap, handler_call_details)


class AioTraceServerInterceptor(grpc.aio.ServerInterceptor):
    """:class:`TraceServerInterceptor` for ``grpc.aio`` servers."""

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        return _rewrap(await continuation(handler_call_details), _aio_wrap, handler_call_details)


def _instance(
    service: str, address: str, instance_id: str | None, metadata: Mapping[str, str] | None
) -> ServiceInstance:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(
            f"server address {address!r} must be 'host:port' (the address clients dial)"
        )
    if host in ("0.0.0.0", "[::]", "::"):
        raise ConfigError(
            f"server address {address!r} is a wildcard: register the address clients dial"
        )
    if instance_id is None:
        instance_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    meta = dict(metadata or {})
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise ConfigError(f"instance metadata must map str to str, got {meta!r}")
    return ServiceInstance(service, instance_id, address, meta)


def _check_times(ttl: int, drain_delay: float, grace: float | None) -> None:
    if drain_delay < 0:
        raise ConfigError(f"drain_delay must be >= 0 seconds, got {drain_delay}")
    if grace is not None and grace < 0:
        raise ConfigError(f"grace must be >= 0 seconds, got {grace}")
    if ttl < 1:
        raise ConfigError(f"registration ttl must be >= 1 second, got {ttl}")


S = TypeVar("S")


class _Registration(Generic[S]):
    """What both registrations hold; :meth:`_begin_stop` is true the first time only."""

    def __init__(
        self,
        registry: ServiceRegistry,
        server: S,
        instance: ServiceInstance,
        drain_delay: float,
        grace: float | None,
    ) -> None:
        self.instance = instance
        self._registry = registry
        self._server = server
        self._drain_delay = drain_delay
        self._grace = grace
        self._stop_lock = threading.Lock()
        self._stopped = False

    def _begin_stop(self) -> bool:
        with self._stop_lock:
            first, self._stopped = not self._stopped, True
        return first

    def _deregistered(self) -> None:
        _log.info(
            "grpc server deregistered; draining",
            service_name=self.instance.name,
            id=self.instance.id,
            address=self.instance.address,
        )


class ServerRegistration(_Registration[grpc.Server], Closing):
    """A started ``grpc.Server`` published in the registry (made by :func:`register_server`).

    :meth:`stop` (also ``close()`` and leaving a ``with`` block) deregisters first, so clients
    stop picking this instance (their watches see it within milliseconds), waits
    ``drain_delay`` for the calls of clients that picked it just before, then stops the server
    with ``grace``: new calls are refused and in-flight calls may finish within it.
    """

    def stop(self, grace: float | None = None) -> None:
        """Deregister, wait ``drain_delay``, stop the server; returns once its calls ended."""
        if not self._begin_stop():
            return
        self._registry.deregister(self.instance)
        self._deregistered()
        time.sleep(self._drain_delay)
        self._server.stop(self._grace if grace is None else grace).wait()

    def close(self) -> None:
        self.stop()


def register_server(
    registry: ServiceRegistry,
    server: grpc.Server,
    service: str,
    address: str,
    *,
    instance_id: str | None = None,
    metadata: Mapping[str, str] | None = None,
    ttl: int = DEFAULT_REGISTRATION_TTL,
    drain_delay: float = DEFAULT_DRAIN_DELAY,
    grace: float | None = DEFAULT_GRACE,
) -> ServerRegistration:
    """Publish a *started* ``server`` as an instance of ``service`` reachable at ``address``
    ("host:port" that clients dial) with ``metadata`` (``version``, ``zone``... what channel
    filters match on). ``instance_id`` defaults to host-pid-random. The registration's lease
    (``ttl`` seconds) is kept alive and re-created after an etcd outage by the registry."""
    _check_times(ttl, drain_delay, grace)
    instance = _instance(service, address, instance_id, metadata)
    registry.register(instance, ttl=ttl)
    return ServerRegistration(registry, server, instance, drain_delay, grace)


class AioServerRegistration(_Registration[grpc.aio.Server]):
    """:class:`ServerRegistration` for a ``grpc.aio.Server`` (``await reg.stop()``, or
    ``async with``)."""

    async def stop(self, grace: float | None = None) -> None:
        """Deregister, wait ``drain_delay``, stop the server; returns once its calls ended."""
        if not self._begin_stop():
            return
        await asyncio.to_thread(self._registry.deregister, self.instance)
        self._deregistered()
        await asyncio.sleep(self._drain_delay)
        await self._server.stop(self._grace if grace is None else grace)

    async def __aenter__(self) -> AioServerRegistration:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def register_aio_server(
    registry: ServiceRegistry,
    server: grpc.aio.Server,
    service: str,
    address: str,
    *,
    instance_id: str | None = None,
    metadata: Mapping[str, str] | None = None,
    ttl: int = DEFAULT_REGISTRATION_TTL,
    drain_delay: float = DEFAULT_DRAIN_DELAY,
    grace: float | None = DEFAULT_GRACE,
) -> AioServerRegistration:
    """:func:`register_server` for a started ``grpc.aio.Server`` (the etcd calls run on a
    worker thread, off the event loop)."""
    _check_times(ttl, drain_delay, grace)
    instance = _instance(service, address, instance_id, metadata)
    await asyncio.to_thread(registry.register, instance, ttl=ttl)
    return AioServerRegistration(registry, server, instance, drain_delay, grace)
