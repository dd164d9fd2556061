"""The sans-I/O core of the balanced gRPC channels (blocking and asyncio drivers share it).

- :class:`Pool` holds one endpoint (a subchannel to one instance) per registered instance that
  passes the filters, follows the registry's updates, counts calls in flight per endpoint and
  closes a removed endpoint only once its last call finished (so no in-flight call is lost).
- :class:`CallPlan` is one call's attempts: the deadline, the route key, which endpoints were
  tried, and whether a failure may be retried on another instance; it records the call's
  duration and status when the call ends (``rpc.client.call.duration``).

The drivers create and close the channels (``open``/``close`` callbacks) and run the attempts.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator, Iterable, Sequence
from typing import Any, Generic, TypeVar

import grpc

from im_infra.coord._internal.log import log
from im_infra.coord.errors import ConfigError, NoInstanceAvailable
from im_infra.coord.rpc._internal.metrics import (
    MethodMetrics,
    code_of,
    method_metrics,
    settled_code,
)
from im_infra.coord.rpc.balancer import (
    ROUTE_KEY_METADATA,
    Balancer,
    current_route_key,
)
from im_infra.coord.rpc.context import Metadata, inherited_timeout, outgoing_metadata
from im_infra.coord.types import ServiceInstance

C = TypeVar("C")
_Key = tuple[str, str, Any, Any]

_log = log.named("rpc")

IDLE, CONNECTING, READY, FAILING, SHUTDOWN = range(5)
_STATE = {
    grpc.ChannelConnectivity.IDLE: IDLE,
    grpc.ChannelConnectivity.CONNECTING: CONNECTING,
    grpc.ChannelConnectivity.READY: READY,
    grpc.ChannelConnectivity.TRANSIENT_FAILURE: FAILING,
    grpc.ChannelConnectivity.SHUTDOWN: SHUTDOWN,
}

#: What grpc-core says when a call failed before any byte reached a server (checked on this
#: grpcio: a server killed mid-call gives "Socket closed" instead, which is *not* retried
#: unless the method is idempotent).
_NOT_SENT = (
    "failed to connect to all addresses",
    "failed to connect to remote host",
    "connection refused",
    "dns resolution failed",
    "no ready instance",
)


def state_of(connectivity: grpc.ChannelConnectivity) -> int:
    return _STATE[connectivity]


class NoReadyInstance(NoInstanceAvailable, grpc.RpcError):
    """No registered instance can take the call: both a :class:`~im_infra.coord.CoordError`
    and a ``grpc.RpcError`` with code UNAVAILABLE, so stub callers' handlers see it too."""

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE

    def details(self) -> str:
        return str(self)


class Endpoint(Generic[C]):
    """One instance and the channel to it."""

    __slots__ = (
        "callables",
        "channel",
        "id",
        "inflight",
        "instance",
        "removed",
        "state",
        "watcher",
    )

    def __init__(self, instance: ServiceInstance, channel: C) -> None:
        self.instance = instance
        self.id = instance.id
        self.channel = channel
        self.inflight = 0
        self.state = IDLE
        self.removed = False
        self.callables: dict[_Key, Any] = {}
        self.watcher: Any = None  # the driver's connectivity subscription

    def __repr__(self) -> str:
        return f"Endpoint({self.id!r}, {self.instance.address!r}, inflight={self.inflight})"


class Pool(Generic[C]):
    """The endpoints of one service (thread-safe)."""

    def __init__(
        self,
        service: str,
        balancer: Balancer,
        accept: Callable[[ServiceInstance], bool],
        open_channel: Callable[[ServiceInstance], C],
        close_endpoint: Callable[[Endpoint[C]], None],
        watch_endpoint: Callable[[Endpoint[C]], None],
    ) -> None:
        self.service = service
        self._balancer = balancer
        self._accept = accept
        self._open = open_channel
        self._close = close_endpoint
        self._watch = watch_endpoint
        self._lock = threading.Lock()
        self._endpoints: dict[str, Endpoint[C]] = {}
        self._candidates: list[Endpoint[C]] = []
        self._closed = False

    # ------------------------------------------------------------------ registry updates
    def update(self, instances: Iterable[ServiceInstance]) -> None:
        """Apply the registry's current list of instances."""
        wanted = {i.id: i for i in instances if self._accept(i)}
        opened: list[Endpoint[C]] = []
        to_close: list[Endpoint[C]] = []
        with self._lock:
            if self._closed:
                return
            for ep in list(self._endpoints.values()):
                inst = wanted.get(ep.id)
                if inst is not None and inst.address == ep.instance.address:
                    ep.instance = inst  # metadata may change in place
                    continue
                del self._endpoints[ep.id]
                ep.removed = True
                if ep.inflight == 0:
                    to_close.append(ep)
            for inst in wanted.values():
                if inst.id not in self._endpoints:
                    ep = Endpoint(inst, self._open(inst))
                    self._endpoints[inst.id] = ep
                    opened.append(ep)
            self._balancer.update(sorted(self._endpoints.values(), key=lambda e: e.id))
            self._refresh()
        for ep in to_close:
            self._close(ep)
        for ep in opened:
            self._watch(ep)
        if opened or to_close:
            _log.debug(
                "instances changed",
                service_name=self.service,
                added=[e.id for e in opened],
                removed=[e.id for e in to_close],
            )

    def set_state(self, ep: Endpoint[C], state: int) -> None:
        """Record an endpoint's connectivity (from the driver's watcher)."""
        with self._lock:
            if ep.state == state:
                return
            ep.state = state
            if not ep.removed:
                self._refresh()

    def _refresh(self) -> None:
        """Candidates: the READY endpoints; else those not failing; else all (the call then
        fails fast with UNAVAILABLE and may be retried)."""
        eps = sorted(self._endpoints.values(), key=lambda e: e.id)
        ready = [e for e in eps if e.state == READY]
        self._candidates = ready or [e for e in eps if e.state < READY] or eps

    # ------------------------------------------------------------------ per call
    def acquire(self, key: str | None, tried: Sequence[Endpoint[C]]) -> Endpoint[C]:
        """Pick an endpoint for an attempt and count the call in flight on it."""
        with self._lock:
            candidates = self._candidates
            if tried:
                fresh = [e for e in candidates if e not in tried]
                if not fresh:  # every candidate was tried: any instance not tried yet
                    fresh = [e for e in self._endpoints.values() if e not in tried]
                candidates = fresh or candidates
            if not candidates:
                raise NoReadyInstance(
                    f"no ready instance of service {self.service!r} (none registered, or "
                    "none passes the channel's filters)"
                )
            ep: Endpoint[C] = self._balancer.pick(candidates, key)  # type: ignore[assignment]
            ep.inflight += 1
            return ep

    def release(self, ep: Endpoint[C]) -> None:
        with self._lock:
            ep.inflight -= 1
            last = ep.removed and ep.inflight == 0
        if last:
            self._close(ep)

    def endpoints(self) -> list[Endpoint[C]]:
        with self._lock:
            return sorted(self._endpoints.values(), key=lambda e: e.id)

    def close(self) -> list[Endpoint[C]]:
        """Forget every endpoint; returns them for the driver to close."""
        with self._lock:
            self._closed = True
            eps = list(self._endpoints.values())
            self._endpoints.clear()
            self._candidates = []
            for ep in eps:
                ep.removed = True
        return eps


class RetryPolicy:
    """Which failures a call retries on another instance.

    A failure that never reached a server (UNAVAILABLE while connecting) is retried for every
    method; the ``codes`` (default UNAVAILABLE) only for methods in ``idempotent`` (full method
    names ``/package.Service/Method``, or True for all).
    """

    def __init__(
        self,
        max_attempts: int = 3,
        idempotent: bool | Iterable[str] = (),
        codes: Iterable[grpc.StatusCode] = (grpc.StatusCode.UNAVAILABLE,),
        backoff: float = 0.02,
    ) -> None:
        if max_attempts < 1:
            raise ConfigError(f"max_attempts must be >= 1, got {max_attempts}")
        if backoff < 0:
            raise ConfigError(f"retry backoff must be >= 0, got {backoff}")
        self.max_attempts = max_attempts
        if isinstance(idempotent, str):
            raise ConfigError("idempotent= takes a collection of method names, not one string")
        self.all_idempotent = idempotent is True
        self.idempotent = frozenset(() if isinstance(idempotent, bool) else idempotent)
        for name in self.idempotent:
            if not name.startswith("/") or name.count("/") != 2:
                raise ConfigError(
                    f"idempotent method {name!r} is not a full name like /pkg.Service/Method"
                )
        self.codes = frozenset(codes)
        self.backoff = backoff

    def is_idempotent(self, method: str) -> bool:
        return self.all_idempotent or method in self.idempotent


def not_sent(exc: grpc.RpcError) -> bool:
    """True when the failure happened before the request reached a server."""
    if exc.code() != grpc.StatusCode.UNAVAILABLE:
        return False
    details = (exc.details() or "").lower()
    return any(marker in details for marker in _NOT_SENT)


class CallPlan(Generic[C]):
    """One call: its deadline, route key and attempts; :meth:`attempts` is the retry loop as a
    flow the blocking and the asyncio driver run."""

    __slots__ = (
        "_deadline",
        "_metrics",
        "_pool",
        "_started",
        "idempotent",
        "key",
        "metadata",
        "policy",
        "tried",
    )

    def __init__(
        self,
        pool: Pool[C],
        policy: RetryPolicy,
        method: str,
        timeout: float | None,
        metadata: Metadata | None,
        metrics: MethodMetrics | None = None,
    ) -> None:
        self._started = time.perf_counter()
        self._metrics = method_metrics(method) if metrics is None else metrics
        self.metadata = metadata
        self._pool = pool
        self.policy = policy
        self.idempotent = policy.is_idempotent(method)
        inherited = inherited_timeout()
        if inherited is not None and (timeout is None or inherited < timeout):
            timeout = max(inherited, 0.0)
        self._deadline = None if timeout is None else time.monotonic() + timeout
        key = current_route_key()
        if metadata:
            for k, v in metadata:
                if k == ROUTE_KEY_METADATA:
                    key = v if isinstance(v, str) else v.decode("utf-8", "replace")
        self.key = key
        self.tried: list[Endpoint[C]] = []

    def first(self) -> Endpoint[C]:
        return self._acquire(())

    def next(self) -> Endpoint[C]:
        return self._acquire(self.tried)

    def _acquire(self, tried: Sequence[Endpoint[C]]) -> Endpoint[C]:
        try:
            ep = self._pool.acquire(self.key, tried)
        except NoReadyInstance:
            self._metrics.no_ready_instance()
            raise
        self.tried.append(ep)
        return ep

    def attempts(self) -> Generator[Endpoint[C] | float, Any, Any]:
        """The call's attempts without I/O: yields the endpoint to call now (and receives the
        result, or has the ``grpc.RpcError`` thrown in) or the seconds to wait before the next
        attempt; returns the result of the attempt that succeeded, or raises the final error.
        Each attempt's callable and timeout come from :meth:`Method.on` and :meth:`timeout`.
        The call's duration and status are recorded when it ends."""
        code = grpc.StatusCode.OK
        try:
            ep = self.first()
            while True:
                try:
                    result = yield ep
                except grpc.RpcError as exc:
                    delay = self.failed(ep, exc)
                    if delay:
                        yield delay
                    ep = self.retry(exc)
                    continue
                except BaseException:
                    self.done(ep)
                    raise
                self.done(ep)
                return result
        except BaseException as exc:
            code = code_of(exc)
            raise
        finally:
            self.ended(code)

    def ended(self, code: grpc.StatusCode) -> None:
        """Record the call's duration and final status (the instance: its last attempt's)."""
        address = self.tried[-1].instance.address if self.tried else None
        self._metrics.client_call(self._started, code, address)

    def finish(self, code: grpc.StatusCode) -> None:
        """A single-attempt call ended: release its endpoint and record it."""
        if self.tried:
            self._pool.release(self.tried[-1])
        self.ended(code)

    def settle(self, call: Any) -> None:
        """:meth:`finish` from a call's done callback (its status read from ``call``)."""
        self.finish(settled_code(call))

    def timeout(self) -> float | None:
        """Seconds left for the next attempt (None: no deadline)."""
        if self._deadline is None:
            return None
        return max(self._deadline - time.monotonic(), 0.0)

    def done(self, ep: Endpoint[C]) -> None:
        self._pool.release(ep)

    def failed(self, ep: Endpoint[C], exc: grpc.RpcError) -> float:
        """An attempt on ``ep`` failed with ``exc``: re-raises it when it is final, else the
        seconds to wait before :meth:`retry`."""
        self._pool.release(ep)
        delay = self.retry_after(exc)
        if delay is None:
            raise exc
        return delay

    def retry(self, exc: grpc.RpcError) -> Endpoint[C]:
        """The endpoint of the next attempt (``exc`` re-raised when none is left)."""
        try:
            ep = self.next()
        except NoReadyInstance:
            raise exc from None
        self._metrics.retry()
        return ep

    def retry_after(self, exc: grpc.RpcError) -> float | None:
        """Seconds to wait before the next attempt, or None when ``exc`` is final."""
        if len(self.tried) >= self.policy.max_attempts:
            return None
        if isinstance(exc, NoReadyInstance):
            return None
        if not not_sent(exc) and not (self.idempotent and exc.code() in self.policy.codes):
            return None
        # the first retry at once (on another instance), then short growing pauses
        delay = self.policy.backoff * (len(self.tried) - 1)
        if self._deadline is not None and time.monotonic() + delay >= self._deadline:
            return None
        _log.debug(
            "retrying on another instance",
            service_name=self._pool.service,
            instance=self.tried[-1].id,
            code=exc.code().name,
        )
        return delay


def _extra(registered: bool | None) -> dict[str, Any]:
    # grpcio's generated stubs pass _registered_method=True (not in the type stubs)
    return {"_registered_method": True} if registered else {}


class Method(Generic[C]):
    """What every multicallable of both channels shares: the method, its serializers and the
    per-endpoint callable (made once per subchannel)."""

    def __init__(
        self,
        pool: Pool[C],
        policy: RetryPolicy,
        kind: str,
        method: str,
        ser: Any,
        deser: Any,
        reg: bool,
    ) -> None:
        self._pool = pool
        self._policy = policy
        self._method = method
        self._metrics = method_metrics(method)
        self._key: _Key = (kind, method, ser, deser)
        self._ser = ser
        self._deser = deser
        self._reg = _extra(reg)

    def on(self, ep: Endpoint[C]) -> Any:
        fn = ep.callables.get(self._key)
        if fn is None:
            make = getattr(ep.channel, self._key[0])
            fn = ep.callables[self._key] = make(
                self._method,
                request_serializer=self._ser,
                response_deserializer=self._deser,
                **self._reg,
            )
        return fn

    def plan(self, timeout: float | None, metadata: Metadata | None) -> CallPlan[C]:
        """A call's plan: its metadata to send (the caller's and the trace's) and deadline
        (the caller's timeout, or what is left of an inherited one)."""
        md = outgoing_metadata(metadata)
        return CallPlan(self._pool, self._policy, self._method, timeout, md, self._metrics)

    def single(self, attr: str, args: tuple[Any, ...], kw: dict[str, Any], release: str) -> Any:
        """One attempt of ``callable.<attr>(*args, **kw)`` on the picked instance (the kinds
        without retries). ``release`` (the endpoint, and the call's duration recorded):
        "return" (blocking: when it returns), "done" (a future or an asyncio call:
        ``add_done_callback``), "end" (a blocking stream: ``add_callback``, at its end)."""
        plan = self.plan(kw["timeout"], kw["metadata"])
        try:
            fn = self.on(plan.first())
            kw["metadata"], kw["timeout"] = plan.metadata, plan.timeout()
            result = getattr(fn, attr)(*args, **kw)
        except BaseException as exc:
            plan.finish(code_of(exc))
            raise
        if release == "return":
            plan.finish(grpc.StatusCode.OK)
        elif release == "done":
            result.add_done_callback(plan.settle)
        elif not result.add_callback(lambda: plan.settle(result)):
            plan.settle(result)  # already terminated
        return result


def call_options(
    timeout: float | None,
    metadata: Iterable[tuple[str, str | bytes]] | None,
    credentials: grpc.CallCredentials | None,
    wait_for_ready: bool | None,
    compression: grpc.Compression | None,
) -> dict[str, Any]:
    """A call's keyword arguments, as grpc's multicallables take them."""
    return {
        "timeout": timeout,
        "metadata": metadata,
        "credentials": credentials,
        "wait_for_ready": wait_for_ready,
        "compression": compression,
    }


def metadata_filter(
    match: Callable[[ServiceInstance], bool] | dict[str, str] | None,
) -> Callable[[ServiceInstance], bool]:
    """The instance filter of a channel: a predicate, or metadata values that must match
    exactly (``{"version": "v2", "zone": "eu-1"}``)."""
    if match is None:
        return lambda _inst: True
    if callable(match):
        return match
    if not isinstance(match, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in match.items()
    ):
        raise ConfigError(
            f"filters must be a dict of metadata str -> str or a predicate, got {match!r}"
        )
    wanted = tuple(match.items())
    return lambda inst: all(inst.metadata.get(k) == v for k, v in wanted)
