"""The rpc module's metrics (client: balanced channels; server: the trace interceptors), read
through the OpenTelemetry SDK's in-memory reader, for known calls on real gRPC servers
registered in the stack's etcd.

Each test calls methods of a gRPC service named after the test's unique name, so the points it
reads are its own (values are cumulative for the session).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import grpc
import grpc.aio
import pytest

from im_infra import coord
from im_infra.coord import rpc

CLIENT = "rpc.client.call.duration"
SERVER = "rpc.server.call.duration"
NO_READY = "im_infra.coord.rpc.no_ready_instance"
RETRIES = "im_infra.coord.rpc.retries"


def _attrs(method: str, code: str | None = None, **more: Any) -> dict[str, Any]:
    attrs: dict[str, Any] = {"rpc.system.name": "grpc", "rpc.method": method, **more}
    if code is not None:
        attrs["rpc.response.status_code"] = code
        if code != "OK":
            attrs["error.type"] = code
    return attrs


def _exact(probe: Any, name: str, attrs: dict[str, Any]) -> list[Any]:
    """The points of ``name`` whose attributes are exactly ``attrs``."""
    return [p for p in probe.points(name, **attrs) if dict(p.attributes) == attrs]


def _count(probe: Any, name: str, attrs: dict[str, Any]) -> int:
    return int(sum(p.count for p in _exact(probe, name, attrs)))


def _eventually(check: Callable[[], Any], want: Any, timeout: float = 5.0) -> None:
    """Done callbacks (a stream's end, a future's) run on grpc's threads just after the caller
    saw the end: poll briefly."""
    deadline = time.monotonic() + timeout
    while (got := check()) != want:
        assert time.monotonic() < deadline, f"wanted {want}, got {got}"
        time.sleep(0.01)


def _handlers(service: str, unavailable: bool = False) -> grpc.GenericRpcHandler:
    def ok(request: bytes, context: grpc.ServicerContext) -> bytes:
        if unavailable:
            context.abort(grpc.StatusCode.UNAVAILABLE, "this instance refuses")
        return request

    def missing(request: bytes, context: grpc.ServicerContext) -> bytes:
        context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")

    def broken(request: bytes, context: grpc.ServicerContext) -> bytes:
        raise RuntimeError("handler bug")

    def count(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        for i in range(int(request)):
            yield str(i).encode()

    def total(requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
        return str(sum(int(r) for r in requests)).encode()

    return grpc.method_handlers_generic_handler(
        service,
        {
            "Ok": grpc.unary_unary_rpc_method_handler(ok),
            "Missing": grpc.unary_unary_rpc_method_handler(missing),
            "Broken": grpc.unary_unary_rpc_method_handler(broken),
            "Count": grpc.unary_stream_rpc_method_handler(count),
            "Total": grpc.stream_unary_rpc_method_handler(total),
        },
    )


def _serve(
    provider: coord.EtcdProvider, name: str, service: str, sid: str, unavailable: bool = False
) -> tuple[rpc.ServerRegistration, int]:
    server = grpc.server(
        ThreadPoolExecutor(max_workers=4), interceptors=[rpc.TraceServerInterceptor()]
    )
    server.add_generic_rpc_handlers([_handlers(service, unavailable)])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    reg = rpc.register_server(
        provider.registry, server, name, f"127.0.0.1:{port}", instance_id=sid,
        drain_delay=0, grace=1,
    )  # fmt: skip
    return reg, port


def _wait_ready(ch: rpc.BalancedChannel, n: int) -> None:
    deadline = time.monotonic() + 10
    while len(ch.ready_instances()) < n:
        assert time.monotonic() < deadline, f"{n} ready instances: got {ch.ready_instances()}"
        time.sleep(0.02)


def test_client_and_server_durations_by_method_and_status(
    provider: coord.EtcdProvider, unique: str, metrics_probe: Any
) -> None:
    service = f"{unique}.Echo"
    reg, port = _serve(provider, unique, service, "s1")
    at = {"server.address": "127.0.0.1", "server.port": port}
    try:
        with rpc.channel(provider.registry, unique) as ch:
            _wait_ready(ch, 1)
            ok: grpc.UnaryUnaryMultiCallable[bytes, bytes] = ch.unary_unary(f"/{service}/Ok")
            for _ in range(3):
                assert ok(b"x", timeout=5) == b"x"
            assert ok.with_call(b"y", timeout=5)[0] == b"y"
            assert ok.future(b"z", timeout=5).result() == b"z"
            missing = ch.unary_unary(f"/{service}/Missing")
            with pytest.raises(grpc.RpcError) as err:
                missing(b"", timeout=5)
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
            with pytest.raises(grpc.RpcError) as err:
                ch.unary_unary(f"/{service}/Broken")(b"", timeout=5)
            assert err.value.code() == grpc.StatusCode.UNKNOWN
            count: grpc.UnaryStreamMultiCallable[bytes, bytes] = ch.unary_stream(
                f"/{service}/Count"
            )
            assert list(count(b"3", timeout=5)) == [b"0", b"1", b"2"]
            total: grpc.StreamUnaryMultiCallable[bytes, bytes] = ch.stream_unary(
                f"/{service}/Total"
            )
            assert total(iter([b"1", b"2"]), timeout=5) == b"3"
    finally:
        reg.stop()

    probe = metrics_probe
    expected = {
        ("Ok", "OK"): 5,  # __call__ x3, with_call, future
        ("Missing", "NOT_FOUND"): 1,  # context.abort
        ("Broken", "UNKNOWN"): 1,  # the handler raised
        ("Count", "OK"): 1,  # a response stream: recorded at its end
        ("Total", "OK"): 1,
    }
    for (name, code), n in expected.items():
        method = f"{service}/{name}"
        _eventually(partial(_count, probe, CLIENT, _attrs(method, code, **at)), n)
        _eventually(partial(_count, probe, SERVER, _attrs(method, code)), n)
    # nothing else was recorded for these methods (no other status, no per-attempt points)
    for name in ("Ok", "Missing", "Broken", "Count", "Total"):
        method = f"{service}/{name}"
        n = sum(v for (k, _c), v in expected.items() if k == name)
        assert sum(p.count for p in probe.points(CLIENT, **{"rpc.method": method})) == n
        assert sum(p.count for p in probe.points(SERVER, **{"rpc.method": method})) == n
    (point,) = _exact(probe, CLIENT, _attrs(f"{service}/Ok", "OK", **at))
    assert 0 < point.sum < 5 * 5  # seconds, not milliseconds


def test_no_ready_instance_is_counted_and_recorded_unavailable(
    provider: coord.EtcdProvider, unique: str, metrics_probe: Any
) -> None:
    method = f"{unique}.Echo/Ok"
    with rpc.channel(provider.registry, unique) as ch:  # nothing registered under that name
        with pytest.raises(rpc.NoReadyInstance):
            ch.unary_unary(f"/{method}")(b"", timeout=1)
        with pytest.raises(rpc.NoReadyInstance):
            ch.unary_stream(f"/{method}")(b"", timeout=1)
    assert metrics_probe.value(NO_READY, **_attrs(method)) == 2
    assert _count(metrics_probe, CLIENT, _attrs(method, "UNAVAILABLE")) == 2  # no address


def test_retries_are_counted_and_the_call_recorded_once(
    provider: coord.EtcdProvider, unique: str, metrics_probe: Any
) -> None:
    service = f"{unique}.Echo"
    method = f"{service}/Ok"
    regs = [
        _serve(provider, unique, service, "bad", unavailable=True)[0],
        _serve(provider, unique, service, "good")[0],
    ]
    try:
        with rpc.channel(provider.registry, unique, idempotent={f"/{method}"}) as ch:
            _wait_ready(ch, 2)
            call = ch.unary_unary(f"/{method}")
            for _ in range(6):  # round robin: every other call tries "bad" first
                assert call(b"r", timeout=5) == b"r"
    finally:
        for reg in regs:
            reg.stop()
    retries = metrics_probe.value(RETRIES, **_attrs(method))
    assert 1 <= retries <= 6
    # one client point per call (its final status), whatever its attempts
    assert sum(p.count for p in metrics_probe.points(CLIENT, **{"rpc.method": method})) == 6
    assert sum(p.count for p in metrics_probe.points(CLIENT, **_attrs(method, "OK"))) == 6
    # the servers saw every attempt: the refused ones are the retried ones
    assert _count(metrics_probe, SERVER, _attrs(method, "UNAVAILABLE")) == retries
    assert _count(metrics_probe, SERVER, _attrs(method, "OK")) == 6


def test_aio_client_and_server_durations(
    provider: coord.EtcdProvider, unique: str, metrics_probe: Any
) -> None:
    service = f"{unique}.Aio"

    async def ok(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        return request

    async def missing(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        await context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")

    async def count(
        request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> AsyncIterator[bytes]:
        for i in range(int(request)):
            yield str(i).encode()

    async def total(
        requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> bytes:
        return str(sum([int(r) async for r in requests])).encode()

    async def run() -> int:
        server = grpc.aio.server(interceptors=[rpc.AioTraceServerInterceptor()])
        server.add_generic_rpc_handlers(
            [
                grpc.method_handlers_generic_handler(
                    service,
                    {
                        "Ok": grpc.unary_unary_rpc_method_handler(ok),
                        "Missing": grpc.unary_unary_rpc_method_handler(missing),
                        "Count": grpc.unary_stream_rpc_method_handler(count),
                        "Total": grpc.stream_unary_rpc_method_handler(total),
                    },
                )
            ]
        )
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        reg = await rpc.register_aio_server(
            provider.registry, server, unique, f"127.0.0.1:{port}", drain_delay=0, grace=1
        )
        try:
            async with rpc.aio_channel(provider.registry, unique) as ch:
                await asyncio.wait_for(ch.channel_ready(), 10)
                for _ in range(2):
                    assert await ch.unary_unary(f"/{service}/Ok")(b"x", timeout=5) == b"x"
                with pytest.raises(grpc.RpcError) as err:
                    await ch.unary_unary(f"/{service}/Missing")(b"", timeout=5)
                assert err.value.code() == grpc.StatusCode.NOT_FOUND
                stream = ch.unary_stream(f"/{service}/Count")(b"2", timeout=5)
                assert [r async for r in stream] == [b"0", b"1"]
                up = ch.stream_unary(f"/{service}/Total")(timeout=5)
                await up.write(b"4")
                await up.write(b"5")
                await up.done_writing()
                assert await up == b"9"
        finally:
            await reg.stop()
        return port

    port = asyncio.run(run())
    at = {"server.address": "127.0.0.1", "server.port": port}
    probe = metrics_probe
    for name, code, n in (("Ok", "OK", 2), ("Missing", "NOT_FOUND", 1), ("Count", "OK", 1),
                          ("Total", "OK", 1)):  # fmt: skip
        method = f"{service}/{name}"
        assert _count(probe, CLIENT, _attrs(method, code, **at)) == n, method
        assert _count(probe, SERVER, _attrs(method, code)) == n, method
        assert sum(p.count for p in probe.points(CLIENT, **{"rpc.method": method})) == n
