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
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Unpack

import grpc

from im_infra.coord.protocols import ServiceRegistry
from im_infra.coord.rpc._internal.base import BalancedBase, ChannelOptions
from im_infra.coord.rpc._internal.pool import (
    Endpoint,
    Method,
    call_options,
    state_of,
)
from im_infra.coord.rpc.context import Metadata
from im_infra.coord.types import ServiceInstance

__all__ = ["BalancedChannel", "channel"]

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

_Creds = grpc.CallCredentials | None
_Compression = grpc.Compression | None


class _UnaryUnary(Method[grpc.Channel], _UU):
    def _invoke(self, with_call: bool, request: Any, kw: dict[str, Any]) -> Any:
        plan = self.plan(kw["timeout"], kw["metadata"])
        kw["metadata"] = plan.metadata
        attempts = plan.attempts()
        step = next(attempts)
        try:
            while True:  # the retry rule is the flow's; this only does the I/O
                try:
                    if isinstance(step, Endpoint):
                        fn = self.on(step)
                        kw["timeout"] = plan.timeout()
                        reply = fn.with_call(request, **kw) if with_call else fn(request, **kw)
                    else:
                        time.sleep(step)
                        reply = None
                except BaseException as exc:
                    step = attempts.throw(exc)
                else:
                    step = attempts.send(reply)
        except StopIteration as stop:
            return stop.value

    def __call__(
        self,
        request: Any,
        timeout: float | None = None,
        metadata: Metadata | None = None,
        credentials: _Creds = None,
        wait_for_ready: bool | None = None,
        compression: _Compression = None,
    ) -> Any:
        kw = call_options(timeout, metadata, credentials, wait_for_ready, compression)
        return self._invoke(False, request, kw)

    def with_call(
        self,
        request: Any,
        timeout: float | None = None,
        metadata: Metadata | None = None,
        credentials: _Creds = None,
        wait_for_ready: bool | None = None,
        compression: _Compression = None,
    ) -> tuple[Any, grpc.Call]:
        kw = call_options(timeout, metadata, credentials, wait_for_ready, compression)
        result: tuple[Any, grpc.Call] = self._invoke(True, request, kw)
        return result

    def future(
        self,
        request: Any,
        timeout: float | None = None,
        metadata: Metadata | None = None,
        credentials: _Creds = None,
        wait_for_ready: bool | None = None,
        compression: _Compression = None,
    ) -> Any:
        kw = call_options(timeout, metadata, credentials, wait_for_ready, compression)
        return self.single("future", (request,), kw, "done")


class _UnaryStream(Method[grpc.Channel], _US):
    def __call__(
        self,
        request: Any,
        timeout: float | None = None,
        metadata: Metadata | None = None,
        credentials: _Creds = None,
        wait_for_ready: bool | None = None,
        compression: _Compression = None,
    ) -> Any:
        kw = call_options(timeout, metadata, credentials, wait_for_ready, compression)
        return self.single("__call__", (request,), kw, "end")


class _StreamStream(Method[grpc.Channel], _SS):
    def __call__(
        self,
        request_iterator: Iterator[Any],
        timeout: float | None = None,
        metadata: Metadata | None = None,
        credentials: _Creds = None,
        wait_for_ready: bool | None = None,
        compression: _Compression = None,
    ) -> Any:
        kw = call_options(timeout, metadata, credentials, wait_for_ready, compression)
        return self.single("__call__", (request_iterator,), kw, "end")


class _StreamUnary(Method[grpc.Channel], _SU):
    def __call__(
        self,
        request_iterator: Iterator[Any],
        timeout: float | None = None,
        metadata: Metadata | None = None,
        credentials: _Creds = None,
        wait_for_ready: bool | None = None,
        compression: _Compression = None,
    ) -> Any:
        kw = call_options(timeout, metadata, credentials, wait_for_ready, compression)
        return self.single("__call__", (request_iterator,), kw, "return")

    def with_call(
        self,
        request_iterator: Iterator[Any],
        timeout: float | None = None,
        metadata: Metadata | None = None,
        credentials: _Creds = None,
        wait_for_ready: bool | None = None,
        compression: _Compression = None,
    ) -> tuple[Any, grpc.Call]:
        kw = call_options(timeout, metadata, credentials, wait_for_ready, compression)
        result: tuple[Any, grpc.Call] = self.single("with_call", (request_iterator,), kw, "return")
        return result

    def future(
        self,
        request_iterator: Iterator[Any],
        timeout: float | None = None,
        metadata: Metadata | None = None,
        credentials: _Creds = None,
        wait_for_ready: bool | None = None,
        compression: _Compression = None,
    ) -> Any:
        kw = call_options(timeout, metadata, credentials, wait_for_ready, compression)
        return self.single("future", (request_iterator,), kw, "done")


class BalancedChannel(
    BalancedBase[grpc.Channel, _UnaryUnary, _UnaryStream, _StreamUnary, _StreamStream],
    grpc.Channel,
):
    """A ``grpc.Channel`` over every registered instance of one service (see :func:`channel`).

    Closing it closes the subchannels (cancelling their calls, like any ``grpc.Channel``) and
    stops following the registry; it does not close the registry.
    """

    _multicallables = (_UnaryUnary, _UnaryStream, _StreamUnary, _StreamStream)

    def __init__(
        self, registry: ServiceRegistry, service: str, **options: Unpack[ChannelOptions]
    ) -> None:
        self._subscribers: list[Callable[[grpc.ChannelConnectivity], None]] = []
        self._state: grpc.ChannelConnectivity | None = None
        self._sub_lock = threading.Lock()
        super().__init__(registry, service, options)

    # ------------------------------------------------------------------ subchannels
    def _open(self, instance: ServiceInstance) -> grpc.Channel:
        if self._credentials is not None:
            return grpc.secure_channel(instance.address, self._credentials, self._options)
        return grpc.insecure_channel(instance.address, self._options)

    def _watch_endpoint(self, ep: Endpoint[grpc.Channel]) -> None:
        def on_state(connectivity: grpc.ChannelConnectivity) -> None:
            self._pool.set_state(ep, state_of(connectivity))
            self._notify()

        ep.watcher = on_state
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
    def _notify(self) -> None:
        if not self._subscribers:
            return
        with self._sub_lock:
            state = self._connectivity()
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
            state = self._state = self._connectivity()
        callback(state)

    def unsubscribe(self, callback: Callable[[grpc.ChannelConnectivity], None]) -> None:
        with self._sub_lock:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

    def close(self) -> None:
        """Stop following the registry and close every subchannel (idempotent)."""
        self._watch.cancel()
        for ep in self._pool.close():
            self._close_endpoint(ep)

    def __enter__(self) -> BalancedChannel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def channel(
    registry: ServiceRegistry, service: str, **options: Unpack[ChannelOptions]
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
    return BalancedChannel(registry, service, **options)
