"""The asyncio form of :mod:`im_infra.coord.rpc.channel`: a ``grpc.aio.Channel`` for a service
name, balanced over its registered instances (same pool, balancers and retry rules)::

    async with rpc.aio_channel(provider.registry, "im-logic") as ch:
        reply = await chat_pb2_grpc.LogicStub(ch).GetMessages(req, timeout=2)

Create it inside the event loop that uses it. Registry updates arrive on coord's watch thread
and are applied on that loop. The first channel for a service reads its instances from etcd
while it is created (one range request, bounded by the provider's timeout; later channels for
the same service use the registry's cache).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Generator, Sequence
from typing import Any, TypeVar, Unpack

import grpc
import grpc.aio

from im_infra.coord.errors import ConfigError
from im_infra.coord.protocols import ServiceRegistry
from im_infra.coord.rpc._internal.base import BalancedBase, ChannelOptions
from im_infra.coord.rpc._internal.pool import (
    CallPlan,
    Endpoint,
    Method,
    call_options,
    state_of,
)
from im_infra.coord.types import ServiceInstance

__all__ = ["AioBalancedChannel", "aio_channel"]

Req = TypeVar("Req")
Resp = TypeVar("Resp")
_Chan = grpc.aio.Channel
_Metadata = grpc.aio.Metadata | Sequence[tuple[str, str | bytes]] | None


class _UnaryUnaryCall(grpc.aio.UnaryUnaryCall[Req, Resp]):
    """One balanced unary call: its attempts run when awaited (or when a method needs them)."""

    def __init__(self, method: _AioUnaryUnary[Req, Resp], request: Req, kw: dict[str, Any]):
        self._m = method
        self._request = request
        self._kw = kw
        self._plan: CallPlan[_Chan] = method.plan(kw.pop("timeout"), kw.pop("metadata"))
        self._md = self._plan.metadata
        self._last: grpc.aio.UnaryUnaryCall[Req, Resp] | None = None
        self._task: asyncio.Future[Resp] | None = None

    async def _run(self) -> Resp:
        plan = self._plan
        attempts = plan.attempts()
        step = next(attempts)
        try:
            while True:  # the retry rule is the flow's; this only does the I/O
                try:
                    if isinstance(step, Endpoint):
                        self._last = call = self._m.on(step)(
                            self._request, timeout=plan.timeout(), metadata=self._md, **self._kw
                        )
                        reply = await call
                    else:
                        await asyncio.sleep(step)
                        reply = None
                except BaseException as exc:
                    step = attempts.throw(exc)
                else:
                    step = attempts.send(reply)
        except StopIteration as stop:
            result: Resp = stop.value
            return result

    def _started(self) -> asyncio.Future[Resp]:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())
        return self._task

    def __await__(self) -> Generator[Any, None, Resp]:
        if self._task is None:  # the common case: awaited at once, no task needed
            self._task = asyncio.get_running_loop().create_future()
            try:
                result = yield from self._run().__await__()
            except asyncio.CancelledError:
                self._task.cancel()
                raise
            except BaseException as exc:
                self._task.set_exception(exc)
                self._task.exception()  # retrieved: no "never retrieved" warning
                raise
            self._task.set_result(result)
            return result
        return (yield from self._task.__await__())

    # grpc.aio.Call: about the last attempt (the one that decided the outcome)
    def cancelled(self) -> bool:
        return self._task is not None and self._task.cancelled()

    def done(self) -> bool:
        return self._task is not None and self._task.done()

    def time_remaining(self) -> float | None:
        return self._plan.timeout()

    def cancel(self) -> bool:
        if self._last is not None:
            self._last.cancel()
        return self._started().cancel()

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        self._started().add_done_callback(lambda _t: callback(self))

    async def _settled(self) -> grpc.aio.UnaryUnaryCall[Req, Resp]:
        task = self._started()
        await asyncio.wait([task])
        assert self._last is not None
        return self._last

    async def initial_metadata(self) -> Any:
        return await (await self._settled()).initial_metadata()

    async def trailing_metadata(self) -> Any:
        return await (await self._settled()).trailing_metadata()

    async def code(self) -> grpc.StatusCode:
        return await (await self._settled()).code()

    async def details(self) -> str:
        return await (await self._settled()).details()

    async def wait_for_connection(self) -> None:
        await self._settled()


class _AioUnaryUnary(Method[_Chan], grpc.aio.UnaryUnaryMultiCallable[Req, Resp]):
    def __call__(
        self,
        request: Req,
        *,
        timeout: float | None = None,
        metadata: _Metadata = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> _UnaryUnaryCall[Req, Resp]:
        kw = call_options(timeout, metadata, credentials, wait_for_ready, compression)
        return _UnaryUnaryCall(self, request, kw)


class _AioSingle(Method[_Chan]):
    """Streaming kinds: one attempt on the picked instance; the call is grpc's own."""

    def __call__(
        self,
        request: Any = None,
        *,
        timeout: float | None = None,
        metadata: _Metadata = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> Any:
        kw = call_options(timeout, metadata, credentials, wait_for_ready, compression)
        # stream-unary / stream-stream (request None): the requests are written to the call
        return self.single("__call__", () if request is None else (request,), kw, "done")


class AioBalancedChannel(
    BalancedBase[_Chan, _AioUnaryUnary[Any, Any], Any, Any, Any], grpc.aio.Channel
):
    """A ``grpc.aio.Channel`` over every registered instance of one service (see
    :func:`aio_channel`)."""

    _multicallables = (_AioUnaryUnary, _AioSingle, _AioSingle, _AioSingle)

    def __init__(
        self, registry: ServiceRegistry, service: str, **options: Unpack[ChannelOptions]
    ) -> None:
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            raise ConfigError("aio_channel() must be called inside a running event loop") from None
        self._thread = threading.get_ident()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._changed = asyncio.Event()
        super().__init__(registry, service, options)

    # ------------------------------------------------------------------ subchannels
    def _open(self, instance: ServiceInstance) -> _Chan:
        if self._credentials is not None:
            return grpc.aio.secure_channel(instance.address, self._credentials, self._options)
        return grpc.aio.insecure_channel(instance.address, self._options)

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _watch_endpoint(self, ep: Endpoint[_Chan]) -> None:
        async def follow() -> None:
            state = ep.channel.get_state(try_to_connect=True)
            while True:
                self._pool.set_state(ep, state_of(state))
                self._changed.set()
                await ep.channel.wait_for_state_change(state)
                state = ep.channel.get_state(try_to_connect=True)

        ep.watcher = self._spawn(follow())

    def _close_endpoint(self, ep: Endpoint[_Chan]) -> None:
        follower = ep.watcher
        if follower is not None:
            follower.cancel()
        self._spawn(ep.channel.close())

    def _on_instances(self, instances: list[ServiceInstance]) -> None:
        if threading.get_ident() == self._thread:
            self._apply(instances)
            return
        try:
            self._loop.call_soon_threadsafe(self._apply, instances)
        except RuntimeError:  # the loop is closed: nothing left to balance for
            return

    def _apply(self, instances: list[ServiceInstance]) -> None:
        self._pool.update(instances)
        self._changed.set()

    # ------------------------------------------------------------------ grpc.aio.Channel
    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        """READY when any instance is, CONNECTING while some connect, TRANSIENT_FAILURE when
        all fail, IDLE when none is registered."""
        return self._connectivity()

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        while self.get_state() == last_observed_state:
            self._changed.clear()
            await self._changed.wait()

    async def channel_ready(self) -> None:
        """Wait until at least one instance is READY."""
        while (state := self.get_state()) != grpc.ChannelConnectivity.READY:
            await self.wait_for_state_change(state)

    async def close(self, grace: float | None = None) -> None:
        """Stop following the registry and close every subchannel (idempotent)."""
        self._watch.cancel()
        endpoints = self._pool.close()
        for ep in endpoints:
            follower = ep.watcher
            if follower is not None:
                follower.cancel()
        await asyncio.gather(*(ep.channel.close(grace) for ep in endpoints))
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def __aenter__(self) -> AioBalancedChannel:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def aio_channel(
    registry: ServiceRegistry, service: str, **options: Unpack[ChannelOptions]
) -> AioBalancedChannel:
    """The asyncio form of :func:`~im_infra.coord.rpc.channel` (same arguments); call it
    inside the running event loop that will use it."""
    return AioBalancedChannel(registry, service, **options)
