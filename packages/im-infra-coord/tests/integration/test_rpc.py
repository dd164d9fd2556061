"""Balanced gRPC channels on real etcd and real gRPC servers in subprocesses (SIGKILLed,
stopped through their registration helper, added while calls run)."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import selectors
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest

from im_infra import clog, coord
from im_infra.coord import rpc

WORKER = Path(__file__).with_name("grpc_worker.py")
WHO = "/t.Echo/Who"
SLOW = "/t.Echo/Slow"


class Servers:
    """gRPC server processes (grpc_worker.py); all killed when the test ends."""

    def __init__(self, endpoints: str, service: str, logs: Path) -> None:
        self.logs = logs
        self.endpoints = endpoints
        self.service = service
        self.procs: dict[str, subprocess.Popen[str]] = {}

    def start(self, sid: str, ttl: int = 2, **meta: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, str(WORKER), self.endpoints, self.service, sid, str(ttl),
             json.dumps(meta)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=(self.logs / f"{sid}.log").open("a"),
            text=True,
            env=dict(os.environ),
        )  # fmt: skip
        self.procs[sid] = proc
        assert self.read(sid, 30).startswith("ready ")
        return proc

    def read(self, sid: str, timeout: float) -> str:
        proc = self.procs[sid]
        assert proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout):
                proc.kill()
                pytest.fail(f"server {sid} printed nothing in {timeout}s: {self._log(sid)}")
            line = proc.stdout.readline()
            while line.startswith("{"):  # the worker's JSON log lines
                line = proc.stdout.readline()
        if not line:
            pytest.fail(f"server {sid} exited: {self._log(sid)}")
        return line.strip()

    def _log(self, sid: str) -> str:
        return (self.logs / f"{sid}.log").read_text()[-3000:]

    def send(self, sid: str, line: str) -> None:
        stdin = self.procs[sid].stdin
        assert stdin is not None
        stdin.write(line + "\n")
        stdin.flush()

    def kill(self, sid: str) -> None:
        self.procs[sid].kill()
        self.procs[sid].wait(10)

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.communicate(timeout=10)


@pytest.fixture
def servers(etcd_endpoints: str, unique: str, tmp_path: Path) -> Iterator[Servers]:
    s = Servers(etcd_endpoints, unique, tmp_path)
    yield s
    s.close()


def _who(ch: grpc.Channel, method: str = WHO, payload: bytes = b"", **kw: Any) -> dict[str, Any]:
    call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = ch.unary_unary(method)
    reply: dict[str, Any] = json.loads(call(payload, **kw))
    return reply


def _wait_ready(ch: rpc.BalancedChannel, n: int) -> None:
    deadline = time.monotonic() + 10
    while len(ch.ready_instances()) < n:
        assert time.monotonic() < deadline, f"{n} ready instances: got {ch.ready_instances()}"
        time.sleep(0.02)


def test_sigkill_mid_run_loses_no_idempotent_call_and_round_robin_is_even(
    provider: coord.EtcdProvider, servers: Servers, unique: str
) -> None:
    for sid in ("a", "b", "c"):
        servers.start(sid)
    ch = rpc.channel(provider.registry, unique, idempotent={SLOW})
    _wait_ready(ch, 3)
    total, threads = 2000, 8
    served: collections.Counter[str] = collections.Counter()
    failures: list[BaseException] = []
    done = 0
    guard = threading.Lock()
    killed = threading.Event()

    def caller() -> None:
        nonlocal done
        for _ in range(total // threads):
            try:
                sid = _who(ch, SLOW, b"2", timeout=10)["id"]
            except Exception as exc:
                with guard:
                    failures.append(exc)
                continue
            with guard:
                served[sid] += 1
                done += 1
                if done == total // 3:
                    killed.set()

    pool = [threading.Thread(target=caller) for _ in range(threads)]
    for t in pool:
        t.start()
    assert killed.wait(60)
    servers.kill("b")  # SIGKILL with calls in flight on it
    for t in pool:
        t.join(120)
    ch.close()
    assert failures == [], f"{len(failures)} failed calls, first: {failures[:1]}"
    assert sum(served.values()) == total
    assert served["b"] > 0
    # each live server's share within 20 % of an even split between the live servers
    even = (served["a"] + served["c"]) / 2
    for share in (served["a"], served["c"]):
        assert abs(share - even) <= 0.2 * even, served


def test_consistent_hash_sticks_and_moves_only_removed_keys(
    provider: coord.EtcdProvider, servers: Servers, unique: str
) -> None:
    for sid in ("a", "b", "c"):
        servers.start(sid)
    ch = rpc.channel(provider.registry, unique, balancer="consistent_hash")
    _wait_ready(ch, 3)
    keys = [f"user-{i}" for i in range(150)]

    def owners() -> dict[str, str]:
        found = {}
        for key in keys:
            with rpc.route_key(key):
                found[key] = _who(ch)["id"]
        return found

    first = owners()
    assert owners() == first  # sticks
    assert set(first.values()) == {"a", "b", "c"}
    # the metadata form routes like the contextvar
    assert _who(ch, metadata=((rpc.ROUTE_KEY_METADATA, keys[0]),))["id"] == first[keys[0]]
    servers.send("b", "stop")  # deregistered by its helper
    deadline = time.monotonic() + 5
    while any(i.id == "b" for i in ch.instances()):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    after = owners()
    moved = {k for k in keys if after[k] != first[k]}
    assert moved == {k for k in keys if first[k] == "b"}
    assert "b" not in after.values()
    ch.close()


def test_helper_deregisters_first_then_drains(
    provider: coord.EtcdProvider, servers: Servers, unique: str
) -> None:
    servers.start("a")
    servers.start("b")
    ch = rpc.channel(provider.registry, unique)  # Slow is NOT idempotent: no retry hides a loss
    _wait_ready(ch, 2)
    results: list[tuple[float, float, str]] = []
    failures: list[BaseException] = []
    stop = threading.Event()

    def caller() -> None:
        while not stop.is_set():
            t0 = time.time()
            try:
                sid = _who(ch, SLOW, b"300", timeout=10)["id"]
            except Exception as exc:
                failures.append(exc)
                continue
            results.append((t0, time.time(), sid))

    pool = [threading.Thread(target=caller) for _ in range(6)]
    for t in pool:
        t.start()
    time.sleep(1.0)
    servers.send("a", "stop")
    line = servers.read("a", 30)  # "stopped T0 LAST": when stop() began, a's last call start
    _, t_stop, last_on_a = line.split()
    stop.set()
    for t in pool:
        t.join(30)
    ch.close()
    assert failures == []
    # the server kept accepting for its 3 s drain delay, yet no call started on it 1 s after
    # deregistration: clients had stopped picking it
    assert float(last_on_a) < float(t_stop) + 1.0
    # calls in flight on "a" when it was deregistered finished normally
    assert any(sid == "a" and start < float(t_stop) < end for start, end, sid in results)
    assert any(sid == "b" and start > float(t_stop) for start, _, sid in results)


def test_new_instance_takes_calls_within_a_second(
    provider: coord.EtcdProvider, servers: Servers, unique: str
) -> None:
    servers.start("a")
    ch = rpc.channel(provider.registry, unique)
    _wait_ready(ch, 1)
    servers.start("b")  # returns once b is registered
    registered = time.monotonic()
    while _who(ch)["id"] != "b":
        assert time.monotonic() - registered < 1.0, "b took no call within 1 s"
    ch.close()


def test_filters_trace_id_and_deadline_travel(
    provider: coord.EtcdProvider, servers: Servers, unique: str
) -> None:
    servers.start("old", version="v1", zone="z1")
    servers.start("new", version="v2", zone="z1")
    with rpc.channel(provider.registry, unique, filters={"version": "v2"}) as ch:
        _wait_ready(ch, 1)
        assert {_who(ch)["id"] for _ in range(10)} == {"new"}
        with clog.trace_context("trace-rpc-1"):
            reply = _who(ch, timeout=5)
        assert reply["trace"] == "trace-rpc-1"
        assert 3.0 < reply["remaining"] <= 5.1  # grpc rounds deadlines up a little
        # through a hop: the handler's own balanced call inherits trace id and deadline
        with clog.trace_context("trace-rpc-2"):
            hop = _who(ch, "/t.Echo/Hop", unique.encode(), timeout=4)
        assert hop["trace"] == hop["downstream"]["trace"] == "trace-rpc-2"
        assert 2.0 < hop["downstream"]["remaining"] <= 4.1
    with rpc.channel(provider.registry, unique, filters={"zone": "elsewhere"}) as none:
        with pytest.raises(rpc.NoReadyInstance) as info:
            _who(none)
        assert isinstance(info.value, coord.NoInstanceAvailable)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_calls_keep_flowing_while_etcd_is_down(
    etcd_cluster_factory: Any, unique: str, tmp_path: Path
) -> None:
    cluster = etcd_cluster_factory(1)
    own = Servers(cluster.endpoints[0], unique, tmp_path)
    try:
        own.start("a", ttl=5)
        own.start("b", ttl=5)
        with (
            coord.connect(cluster.endpoints, timeout=1) as p,
            rpc.channel(p.registry, unique) as ch,
        ):
            _wait_ready(ch, 2)
            cluster.kill(0)
            assert {_who(ch, timeout=5)["id"] for _ in range(20)} == {"a", "b"}
    finally:
        own.close()


def test_p2c_prefers_the_instance_with_fewer_calls_in_flight(
    provider: coord.EtcdProvider, servers: Servers, unique: str
) -> None:
    servers.start("a")
    servers.start("b")
    # with 2 instances p2c compares both: while one call is in flight on one of them, every
    # quick call goes to the other
    ch = rpc.channel(provider.registry, unique, balancer="p2c")
    _wait_ready(ch, 2)
    pinned = ch.unary_unary(SLOW).future(b"1000")
    time.sleep(0.2)
    quick = collections.Counter(_who(ch)["id"] for _ in range(20))
    busy_id = json.loads(pinned.result())["id"]
    ch.close()
    assert quick[busy_id] == 0, quick


def test_aio_channel_survives_sigkill(
    provider: coord.EtcdProvider, servers: Servers, unique: str
) -> None:
    servers.start("a")
    servers.start("b")

    async def run() -> tuple[collections.Counter[str], list[BaseException]]:
        served: collections.Counter[str] = collections.Counter()
        errors: list[BaseException] = []
        async with rpc.aio_channel(provider.registry, unique, idempotent=True) as ch:
            await asyncio.wait_for(ch.channel_ready(), 10)  # one instance READY
            while len(ch.ready_instances()) < 2:  # calls go to READY instances only
                await asyncio.sleep(0.02)
            call = ch.unary_unary(SLOW)

            async def one() -> None:
                try:
                    served[json.loads(await call(b"5", timeout=10))["id"]] += 1
                except grpc.RpcError as exc:
                    errors.append(exc)

            await asyncio.gather(*(one() for _ in range(100)))
            killer = asyncio.get_running_loop().run_in_executor(None, servers.kill, "b")
            await asyncio.gather(*(one() for _ in range(300)))
            await killer
            with clog.trace_context("aio-trace"):
                reply = json.loads(await ch.unary_unary(WHO)(b"", timeout=5))
            assert reply["trace"] == "aio-trace"
        return served, errors

    served, errors = asyncio.run(run())
    assert errors == []
    assert sum(served.values()) == 400
    assert served["a"] > 0 and served["b"] > 0


def test_bad_arguments_are_config_errors(provider: coord.EtcdProvider, unique: str) -> None:
    reg = provider.registry
    with pytest.raises(coord.ConfigError, match="unknown balancer"):
        rpc.channel(reg, unique, balancer="random-ish")
    with pytest.raises(coord.ConfigError, match="max_attempts"):
        rpc.channel(reg, unique, max_attempts=0)
    with pytest.raises(coord.ConfigError, match="full name"):
        rpc.channel(reg, unique, idempotent={"Slow"})
    with pytest.raises(coord.ConfigError, match="filters"):
        rpc.channel(reg, unique, filters={"version": 2})  # type: ignore[dict-item]
    with pytest.raises(coord.ConfigError, match="invalid service name"):
        rpc.channel(reg, "a/b")
    server = grpc.server(ThreadPoolExecutor(max_workers=1))
    with pytest.raises(coord.ConfigError, match="wildcard"):
        rpc.register_server(reg, server, unique, "0.0.0.0:9000")
    with pytest.raises(coord.ConfigError, match="host:port"):
        rpc.register_server(reg, server, unique, "nohost")
    with pytest.raises(coord.ConfigError, match="aio_channel"):
        rpc.aio_channel(reg, unique)


def _stream_handlers(name: str) -> grpc.GenericRpcHandler:
    def count(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        for i in range(int(request)):
            yield f"{name}:{i}:{clog.trace_id()}".encode()

    def total(requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
        return f"{name}:{sum(int(r) for r in requests)}".encode()

    def echo(requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        for r in requests:
            yield name.encode() + b":" + r

    return grpc.method_handlers_generic_handler(
        "t.Stream",
        {
            "Count": grpc.unary_stream_rpc_method_handler(count),
            "Total": grpc.stream_unary_rpc_method_handler(total),
            "Echo": grpc.stream_stream_rpc_method_handler(echo),
        },
    )


def test_streaming_kinds_through_the_balanced_channel(
    provider: coord.EtcdProvider, unique: str
) -> None:
    regs = []
    for name in ("s1", "s2"):
        server = grpc.server(
            ThreadPoolExecutor(max_workers=4), interceptors=[rpc.TraceServerInterceptor()]
        )
        server.add_generic_rpc_handlers([_stream_handlers(name)])
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        regs.append(
            rpc.register_server(
                provider.registry, server, unique, f"127.0.0.1:{port}", instance_id=name,
                drain_delay=0, grace=1,
            )
        )  # fmt: skip
    with rpc.channel(provider.registry, unique) as ch:
        _wait_ready(ch, 2)
        count: grpc.UnaryStreamMultiCallable[bytes, bytes] = ch.unary_stream("/t.Stream/Count")
        with clog.trace_context("stream-trace"):
            items = [list(count(b"3", timeout=5)) for _ in range(2)]
        assert {i[0].split(b":")[0] for i in items} == {b"s1", b"s2"}  # both instances
        assert all(x.endswith(b":stream-trace") for i in items for x in i)
        assert [len(i) for i in items] == [3, 3]
        total: grpc.StreamUnaryMultiCallable[bytes, bytes] = ch.stream_unary("/t.Stream/Total")
        assert total(iter([b"1", b"2", b"3"])).endswith(b":6")
        assert total.future(iter([b"4"])).result(5).endswith(b":4")
        echo: grpc.StreamStreamMultiCallable[bytes, bytes] = ch.stream_stream("/t.Stream/Echo")
        assert [r.split(b":")[1] for r in echo(iter([b"a", b"b"]))] == [b"a", b"b"]
        # every call finished: nothing counted in flight any more
        assert all(ep.inflight == 0 for ep in ch._pool.endpoints())
    for reg in regs:
        reg.stop()
    assert provider.registry.discover(unique) == []


def test_aio_server_helper_and_interceptor(provider: coord.EtcdProvider, unique: str) -> None:
    async def run() -> None:
        seen: list[str | None] = []

        async def who(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
            seen.append(clog.trace_id())
            await asyncio.sleep(0.3)
            return b"aio"

        server = grpc.aio.server(interceptors=[rpc.AioTraceServerInterceptor()])
        server.add_generic_rpc_handlers(
            [
                grpc.method_handlers_generic_handler(
                    "t.Echo", {"Who": grpc.unary_unary_rpc_method_handler(who)}
                )
            ]
        )
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        reg = await rpc.register_aio_server(
            provider.registry, server, unique, f"127.0.0.1:{port}", drain_delay=0.2, grace=5
        )
        async with rpc.aio_channel(provider.registry, unique) as ch:
            await asyncio.wait_for(ch.channel_ready(), 10)
            with clog.trace_context("aio-server-trace"):
                call = ch.unary_unary(WHO)(b"", timeout=5)
                in_flight = asyncio.ensure_future(call)
            await asyncio.sleep(0.1)
            await reg.stop()  # deregisters, then drains: the call in flight completes
            assert await in_flight == b"aio"
            assert await call.code() == grpc.StatusCode.OK
            assert ch.instances() == []
        assert seen == ["aio-server-trace"]

    asyncio.run(run())
