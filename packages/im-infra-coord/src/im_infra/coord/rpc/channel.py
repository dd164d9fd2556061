"""A blocking ``grpc.Channel`` for a service name, balanced over its registered instances.

grpcio has no Python name-resolver plugin API (grpc/grpc#11685), so instead of an ``etcd:///``
target this is a channel object of its own: one subchannel per registered instance, fed by the
registry's watch, and a balancer choosing one per call. Generated stubs take it like any
channel::

    ch = rpc.channel(provider.registry, "im-logic", idempotent={"/chat.Logic/GetMessages"})
    stub = chat_pb2_grpc.LogicStub(ch)
    reply = stub.GetMessages(req, timeout=2)

Unary-unary calls (``__call__`` and ``with_call``) are retried on another instance when they
fail before reaching one, and for idempotent methods on UNAVAILABLE; ``future()`` and the
streaming kinds make one attempt on the picked instance.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import grpc

from im_infra.coord.protocols import ServiceRegistry
from im_infra.coord.registry import ServiceInstance
from im_infra.coord.rpc._internal.pool import (
    READY,
    CallPlan,
    Endpoint,
    Method,
    NoReadyInstance,
    Pool,
    RetryPolicy,
    metadata_filter,
    state_of,
)
from im_infra.coord.rpc.balancer import Balancer, make_balancer
from im_infra.coord.rpc.context import Metadata, outgoing_metadata

__all__ = ["BalancedChannel", "channel"]


_Filter = Callable[[ServiceInstance], bool] | dict[str, str] | None

if TYPE_CHECKING:  # grpc's blocking multicallables are generic only in the type stubs
    _UU = grpc.UnaryUnaryMultiCallable[Any, Any]
    _US = grpc.UnaryStreamMultiCallable[Any, Any]
    _SU = grpc.StreamUnaryMultiCallable[Any, Any]
    _SS = grpc.StreamStreamMultiCallable[Any, Any]
else:
    _UU = grpc.UnaryUnaryMultiCallable
    _US = grpc.UnaryStreamMultiCallable
    _SU = grpc.StreamUnaryMultiCallable
    _SS = grpc.StreamStreamMultiCallable


class _UnaryUnary(Method[grpc.Channel], _UU):
    def _invoke(
        self,
        with_call: bool,
        request: Any,
        timeout: float | None,
        metadata: Metadata | None,
        credentials: grpc.CallCredentials | None,
        wait_for_ready: bool | None,
        compression: grpc.Compression | None,
    ) -> Any:
        md = outgoing_metadata(metadata)
        plan: CallPlan[grpc.Channel] = CallPlan(self._pool, self._policy, self._method, timeout, md)
        ep = plan.first()
        while True:
            fn = self.on(ep)
            try:
                call = fn.with_call if with_call else fn
                result = call(
                    request,
                    timeout=plan.timeout(),
                    metadata=md,
                    credentials=credentials,
                    wait_for_ready=wait_for_ready,
                    compression=compression,
                )
            except grpc.RpcError as exc:
                plan.done(ep)
                delay = plan.retry_after(exc)
                if delay is None:
                    raise
                if delay:
                    time.sleep(delay)
                try:
                    ep = plan.next()
                except NoReadyInstance:
                    raise exc from None
                continue
            except BaseException:
                plan.done(ep)
                raise
            plan.done(ep)
            return result

    def __call__(
        self,
        request: Any,
        timeout: float | None = None,
        metadata: Metadata | None = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> Any:
        result: Any = self._invoke(
            False, request, timeout, metadata, credentials, wait_for_ready, compression
        )
        return result

    def with_call(
        self,
        request: Any,
        timeout: float | None = None,
        metadata: Metadata | None = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> tuple[Any, grpc.Call]:
        result: tuple[Any, grpc.Call] = self._invoke(
            True, request, timeout, metadata, credentials, wait_for_ready, compression
        )
        return result

    def future(
        self,
        request: Any,
        timeout: float | None = None,
        metadata: Metadata | None = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> Any:
        fn, ep, md, timeout = self.once(timeout, metadata)
        try:
            fut = fn.future(
                request,
                timeout=timeout,
                metadata=md,
                credentials=credentials,
                wait_for_ready=wait_for_ready,
                compression=compression,
            )
        except BaseException:
            self._pool.release(ep)
            raise
        fut.add_done_callback(lambda _f: self._pool.release(ep))
        return fut


class _UnaryStream(Method[grpc.Channel], _US):
    def __call__(
        self,
        request: Any,
        timeout: float | None = None,
        metadata: Metadata | None = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> Any:
        fn, ep, md, timeout = self.once(timeout, metadata)
        try:
            call = fn(
                request,
                timeout=timeout,
                metadata=md,
                credentials=credentials,
                wait_for_ready=wait_for_ready,
                compression=compression,
            )
        except BaseException:
            self._pool.release(ep)
            raise
        return self.release_when_done(call, ep)


class _StreamStream(Method[grpc.Channel], _SS):
    def __call__(
        self,
        request_iterator: Iterator[Any],
        timeout: float | None = None,
        metadata: Metadata | None = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> Any:
        fn, ep, md, timeout = self.once(timeout, metadata)
        try:
            call = fn(
                request_iterator,
                timeout=timeout,
                metadata=md,
                credentials=credentials,
                wait_for_ready=wait_for_ready,
                compression=compression,
            )
        except BaseException:
            self._pool.release(ep)
            raise
        return self.release_when_done(call, ep)


class _StreamUnary(Method[grpc.Channel], _SU):
    def _blocking(self, attr: str, request_iterator: Iterator[Any], kw: dict[str, Any]) -> Any:
        fn, ep, kw["metadata"], kw["timeout"] = self.once(kw["timeout"], kw["metadata"])
        try:
            return getattr(fn, attr)(request_iterator, **kw)
        finally:
            self._pool.release(ep)

    def __call__(
        self,
        request_iterator: Iterator[Any],
        timeout: float | None = None,
        metadata: Metadata | None = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> Any:
        kw = {
            "timeout": timeout,
            "metadata": metadata,
            "credentials": credentials,
            "wait_for_ready": wait_for_ready,
            "compression": compression,
        }
        result: Any = self._blocking("__call__", request_iterator, kw)
        return result

    def with_call(
        self,
        request_iterator: Iterator[Any],
        timeout: float | None = None,
        metadata: Metadata | None = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> tuple[Any, grpc.Call]:
        kw = {
            "timeout": timeout,
            "metadata": metadata,
            "credentials": credentials,
            "wait_for_ready": wait_for_ready,
            "compression": compression,
        }
        result: tuple[Any, grpc.Call] = self._blocking("with_call", request_iterator, kw)
        return result

    def future(
        self,
        request_iterator: Iterator[Any],
        timeout: float | None = None,
        metadata: Metadata | None = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> Any:
        fn, ep, md, timeout = self.once(timeout, metadata)
        try:
            fut = fn.future(
                request_iterator,
                timeout=timeout,
                metadata=md,
                credentials=credentials,
                wait_for_ready=wait_for_ready,
                compression=compression,
            )
        except BaseException:
            self._pool.release(ep)
            raise
        fut.add_done_callback(lambda _f: self._pool.release(ep))
        return fut


class BalancedChannel(grpc.Channel):
    """A ``grpc.Channel`` over every registered instance of one service (see :func:`channel`).

    Closing it closes the subchannels (cancelling their calls, like any ``grpc.Channel``) and
    stops following the registry; it does not close the registry.
    """

    def __init__(
        self,
        registry: ServiceRegistry,
        service: str,
        *,
        balancer: str | Balancer = "round_robin",
        filters: _Filter = None,
        idempotent: bool | Iterable[str] = (),
        max_attempts: int = 3,
        retry_codes: Iterable[grpc.StatusCode] = (grpc.StatusCode.UNAVAILABLE,),
        credentials: grpc.ChannelCredentials | None = None,
        options: Iterable[tuple[str, Any]] | None = None,
    ) -> None:
        self.service = service
        self._credentials = credentials
        self._options = list(options or ())
        self._policy = RetryPolicy(max_attempts, idempotent, retry_codes)
        self._subscribers: list[Callable[[grpc.ChannelConnectivity], None]] = []
        self._state: grpc.ChannelConnectivity | None = None
        self._sub_lock = threading.Lock()
        self._pool: Pool[grpc.Channel] = Pool(
            service,
            make_balancer(balancer),
            metadata_filter(filters),
            self._open,
            self._close_endpoint,
            self._watch_endpoint,
        )
        self._watch = registry.watch(service, self._on_instances)

    # ------------------------------------------------------------------ subchannels
    def _open(self, instance: ServiceInstance) -> grpc.Channel:
        if self._credentials is not None:
            return grpc.secure_channel(instance.address, self._credentials, self._options)
        return grpc.insecure_channel(instance.address, self._options)

    def _watch_endpoint(self, ep: Endpoint[grpc.Channel]) -> None:
        def on_state(connectivity: grpc.ChannelConnectivity) -> None:
            self._pool.set_state(ep, state_of(connectivity))
            self._notify()

        ep.watcher = on_state  #
        ep.channel.subscribe(on_state, try_to_connect=True)

    def _close_endpoint(self, ep: Endpoint[grpc.Channel]) -> None:
        on_state = ep.watcher
        if on_state is not None:
            ep.channel.unsubscribe(on_state)
        ep.channel.close()

    def _on_instances(self, instances: list[ServiceInstance]) -> None:
        self._pool.update(instances)
        self._notify()

    # ------------------------------------------------------------------ grpc.Channel
    def unary_unary(
        self,
        method: str,
        request_serializer: Callable[[Any], bytes] | None = None,
        response_deserializer: Callable[[bytes], Any] | None = None,
        _registered_method: bool | None = False,
    ) -> _UnaryUnary:
        return _UnaryUnary(
            self._pool,
            self._policy,
            "unary_unary",
            method,
            request_serializer,
            response_deserializer,
            bool(_registered_method),
        )

    def unary_stream(
        self,
        method: str,
        request_serializer: Callable[[Any], bytes] | None = None,
        response_deserializer: Callable[[bytes], Any] | None = None,
        _registered_method: bool | None = False,
    ) -> _UnaryStream:
        return _UnaryStream(
            self._pool,
            self._policy,
            "unary_stream",
            method,
            request_serializer,
            response_deserializer,
            bool(_registered_method),
        )

    def stream_unary(
        self,
        method: str,
        request_serializer: Callable[[Any], bytes] | None = None,
        response_deserializer: Callable[[bytes], Any] | None = None,
        _registered_method: bool | None = False,
    ) -> _StreamUnary:
        return _StreamUnary(
            self._pool,
            self._policy,
            "stream_unary",
            method,
            request_serializer,
            response_deserializer,
            bool(_registered_method),
        )

    def stream_stream(
        self,
        method: str,
        request_serializer: Callable[[Any], bytes] | None = None,
        response_deserializer: Callable[[bytes], Any] | None = None,
        _registered_method: bool | None = False,
    ) -> _StreamStream:
        return _StreamStream(
            self._pool,
            self._policy,
            "stream_stream",
            method,
            request_serializer,
            response_deserializer,
            bool(_registered_method),
        )

    def _aggregate(self) -> grpc.ChannelConnectivity:
        states = [ep.state for ep in self._pool.endpoints()]
        if READY in states:
            return grpc.ChannelConnectivity.READY
        if any(s < READY for s in states):
            return grpc.ChannelConnectivity.CONNECTING
        if states:
            return grpc.ChannelConnectivity.TRANSIENT_FAILURE
        return grpc.ChannelConnectivity.IDLE

    def _notify(self) -> None:
        if not self._subscribers:
            return
        with self._sub_lock:
            state = self._aggregate()
            if state == self._state:
                return
            self._state = state
            callbacks = list(self._subscribers)
        for cb in callbacks:
            cb(state)

    def subscribe(
        self, callback: Callable[[grpc.ChannelConnectivity], None], try_to_connect: bool = False
    ) -> None:
        """``callback(state)`` now and on every change of the aggregate state: READY when any
        instance is, CONNECTING while some are connecting, TRANSIENT_FAILURE when all fail,
        IDLE when none is registered."""
        with self._sub_lock:
            self._subscribers.append(callback)
            state = self._state = self._aggregate()
        callback(state)

    def unsubscribe(self, callback: Callable[[grpc.ChannelConnectivity], None]) -> None:
        with self._sub_lock:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

    # ------------------------------------------------------------------ extras
    def instances(self) -> list[ServiceInstance]:
        """The instances calls are spread over now (after the filters)."""
        return [ep.instance for ep in self._pool.endpoints()]

    def ready_instances(self) -> list[ServiceInstance]:
        """The instances whose connection is READY now."""
        return [ep.instance for ep in self._pool.endpoints() if ep.state == READY]

    def close(self) -> None:
        """Stop following the registry and close every subchannel (idempotent)."""
        self._watch.cancel()
        for ep in self._pool.close():
            self._close_endpoint(ep)

    def __enter__(self) -> BalancedChannel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"BalancedChannel({self.service!r}, instances={len(self._pool.endpoints())})"


def channel(
    registry: ServiceRegistry,
    service: str,
    *,
    balancer: str | Balancer = "round_robin",
    filters: _Filter = None,
    idempotent: bool | Iterable[str] = (),
    max_attempts: int = 3,
    retry_codes: Iterable[grpc.StatusCode] = (grpc.StatusCode.UNAVAILABLE,),
    credentials: grpc.ChannelCredentials | None = None,
    options: Iterable[tuple[str, Any]] | None = None,
) -> BalancedChannel:
    """A blocking channel to ``service`` balanced over its instances in ``registry``.

    ``balancer``: ``"round_robin"`` (default), ``"p2c"``, ``"consistent_hash"`` (by
    :func:`~im_infra.coord.rpc.route_key` or the ``x-route-key`` metadata), or an object with
    ``update()``/``pick()``. ``filters``: instance metadata that must match (``{"version":
    "v2"}``) or a predicate. ``idempotent``: full method names (``/pkg.Service/Method``) that
    may be retried after reaching an instance (True: all); a call that failed before reaching
    one is retried for every method. ``max_attempts`` bounds the attempts per call;
    ``retry_codes`` are the codes retried for idempotent methods. ``credentials``/``options``
    are passed to every subchannel (``grpc.secure_channel``/``insecure_channel``).

    Raises :class:`~im_infra.coord.ConfigError` for bad arguments; calls raise ``grpc.RpcError``
    (``NoReadyInstance``, also a :class:`~im_infra.coord.NoInstanceAvailable`, when no
    instance is registered or passes the filters).
    """
    return BalancedChannel(
        registry,
        service,
        balancer=balancer,
        filters=filters,
        idempotent=idempotent,
        max_attempts=max_attempts,
        retry_codes=retry_codes,
        credentials=credentials,
        options=options,
    )
