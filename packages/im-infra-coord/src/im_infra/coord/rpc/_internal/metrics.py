"""The rpc module's OpenTelemetry instruments (API only: no-ops until an SDK is installed).

Names and attributes follow the OpenTelemetry RPC semantic conventions in their current form
(``rpc.client.call.duration`` / ``rpc.server.call.duration`` in seconds, ``rpc.system.name``,
``rpc.method`` = ``package.Service/Method``, ``rpc.response.status_code`` = the status name), the
generation the other im-infra packages follow (``db.client.operation.duration``,
``messaging.client.operation.duration``, both in seconds); im-infra's own counters are
``im_infra.coord.rpc.*``. Every attribute set is built once per method (and status code and
instance address) and reused: a call records with a dictionary look-up.
"""

from __future__ import annotations

import time
from typing import Any

import grpc
from opentelemetry.util.types import Attributes

from im_infra.clog import telemetry

__all__ = ["MethodMetrics", "code_of", "method_metrics", "settled_code"]

SYSTEM = "rpc.system.name"
METHOD = "rpc.method"
STATUS = "rpc.response.status_code"
ERROR_TYPE = "error.type"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"

#: The semantic conventions' advisory buckets for RPC call durations, with 1 and 2.5 ms in
#: front (calls inside one data centre take well under 5 ms).
DURATION_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
)

_meter = telemetry.meter("coord")

CLIENT_DURATION = _meter.create_histogram(
    "rpc.client.call.duration",
    unit="s",
    description="Calls made through the balanced channels, from the call to its status "
    "(every attempt and retry pause included; a streaming call until its stream ends)",
    explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS),
)
SERVER_DURATION = _meter.create_histogram(
    "rpc.server.call.duration",
    unit="s",
    description="Calls handled behind TraceServerInterceptor / AioTraceServerInterceptor, from "
    "the handler's start to its end (a streaming handler until its last response)",
    explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS),
)
NO_READY_INSTANCE = _meter.create_counter(
    "im_infra.coord.rpc.no_ready_instance",
    unit="{pick}",
    description="Picks that found no instance to call (none registered, or none passes the "
    "channel's filters): the call fails with NoReadyInstance (UNAVAILABLE)",
)
RETRIES = _meter.create_counter(
    "im_infra.coord.rpc.retries",
    unit="{attempt}",
    description="Attempts made again on another instance after a retryable failure",
)

_OK = grpc.StatusCode.OK
_UNKNOWN = grpc.StatusCode.UNKNOWN
_CANCELLED = grpc.StatusCode.CANCELLED
#: the attribute sets of one method, per status code and instance address, are forgotten
#: past this many (instances come and go over a process's life; a handful are live at once)
_MAX_SETS = 256


class MethodMetrics:
    """One method's pre-built attribute sets and its recording functions."""

    __slots__ = ("_sets", "base")

    def __init__(self, method: str) -> None:
        self.base: Attributes = {SYSTEM: "grpc", METHOD: method.removeprefix("/")}
        self._sets: dict[tuple[grpc.StatusCode, str | None], Attributes] = {}

    def _attributes(self, code: grpc.StatusCode, address: str | None) -> Attributes:
        attrs = self._sets.get((code, address))
        if attrs is None:
            built: dict[str, Any] = dict(self.base or {})
            built[STATUS] = code.name
            if code is not _OK:
                built[ERROR_TYPE] = code.name
            if address is not None:
                host, _, port = address.rpartition(":")
                built[SERVER_ADDRESS] = host.strip("[]")
                if port.isdigit():
                    built[SERVER_PORT] = int(port)
            if len(self._sets) >= _MAX_SETS:
                self._sets.clear()
            attrs = self._sets[(code, address)] = built
        return attrs

    def client_call(self, started: float, code: grpc.StatusCode, address: str | None) -> None:
        """A balanced call started at ``started`` (``time.perf_counter()``) ended with
        ``code``; ``address``: the instance of its last attempt (None: none was picked)."""
        CLIENT_DURATION.record(time.perf_counter() - started, self._attributes(code, address))

    def server_call(self, started: float, code: grpc.StatusCode) -> None:
        SERVER_DURATION.record(time.perf_counter() - started, self._attributes(code, None))

    def no_ready_instance(self) -> None:
        NO_READY_INSTANCE.add(1, self.base)

    def retry(self) -> None:
        RETRIES.add(1, self.base)


_METHODS: dict[str, MethodMetrics] = {}


def method_metrics(method: str) -> MethodMetrics:
    """The shared :class:`MethodMetrics` of a full method name (``/package.Service/Method``)."""
    found = _METHODS.get(method)
    if found is None:
        found = _METHODS.setdefault(method, MethodMetrics(method))
    return found


def code_of(exc: BaseException) -> grpc.StatusCode:
    """The status a call that raised ``exc`` ended with: an ``RpcError``'s code; CANCELLED when
    it was abandoned (``asyncio.CancelledError``, ``GeneratorExit``, ``KeyboardInterrupt``);
    else UNKNOWN (e.g. a serializer's error)."""
    if isinstance(exc, grpc.RpcError):
        code = getattr(exc, "code", None)
        found = code() if callable(code) else None
        return found if isinstance(found, grpc.StatusCode) else _UNKNOWN
    return _UNKNOWN if isinstance(exc, Exception) else _CANCELLED


def settled_code(call: Any) -> grpc.StatusCode:
    """The status of a call that has ended (in its done callback): grpc's blocking calls
    answer ``code()`` at once; the asyncio ones return a coroutine that, once the call ended,
    completes without suspending."""
    try:
        code = call.code()
        if isinstance(code, grpc.StatusCode):
            return code
        try:
            code.send(None)
        except StopIteration as stop:
            found = stop.value
            return found if isinstance(found, grpc.StatusCode) else _UNKNOWN
        code.close()  # not ended after all (not seen on grpcio): say so rather than wait
    except Exception:  # never keep the callback from releasing the endpoint
        return _UNKNOWN
    return _UNKNOWN
