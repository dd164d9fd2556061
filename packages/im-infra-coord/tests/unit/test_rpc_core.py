"""The balanced channels' pure logic: balancers, the endpoint pool, retry decisions, metadata."""

from __future__ import annotations

import collections
import random
import sys
from dataclasses import dataclass

import grpc
import pytest

from im_infra import clog
from im_infra.coord import ConfigError, NoInstanceAvailable, ServiceInstance
from im_infra.coord.rpc import (
    ConsistentHash,
    NoReadyInstance,
    PowerOfTwoChoices,
    RoundRobin,
    deadline,
    route_key,
)
from im_infra.coord.rpc._internal.pool import (
    FAILING,
    READY,
    CallPlan,
    Endpoint,
    Pool,
    RetryPolicy,
    metadata_filter,
    not_sent,
)
from im_infra.coord.rpc.balancer import Node, make_balancer
from im_infra.coord.rpc.context import TRACE_ID_METADATA, bind_incoming, outgoing_metadata


@dataclass
class FakeNode:
    id: str
    inflight: int = 0


class FakeError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


REFUSED = FakeError(
    grpc.StatusCode.UNAVAILABLE,
    "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: "
    "Failed to connect to remote host: Connection refused",
)
SOCKET_CLOSED = FakeError(grpc.StatusCode.UNAVAILABLE, "Stream removed (Socket closed)")
INTERNAL = FakeError(grpc.StatusCode.INTERNAL, "boom")


def nodes(*ids: str) -> list[Node]:
    return [FakeNode(i) for i in ids]


def test_round_robin_is_even_and_follows_the_candidates() -> None:
    rr = RoundRobin()
    three = nodes("a", "b", "c")
    counts = collections.Counter(rr.pick(three, None).id for _ in range(300))
    assert counts == {"a": 100, "b": 100, "c": 100}
    two = three[::2]
    assert collections.Counter(rr.pick(two, None).id for _ in range(100)) == {"a": 50, "c": 50}


def test_p2c_picks_the_less_loaded_of_two() -> None:
    p2c = PowerOfTwoChoices(random.Random(7))
    a, b = FakeNode("a", inflight=5), FakeNode("b", inflight=0)
    assert {p2c.pick([a, b], None).id for _ in range(50)} == {"b"}
    many = [FakeNode(str(i), inflight=i) for i in range(10)]
    picks = collections.Counter(p2c.pick(many, None).id for _ in range(2000))
    assert picks["9"] == 0  # the busiest never wins a comparison
    assert picks["0"] > picks["5"] > picks["8"]  # fewer in flight, picked more often
    assert p2c.pick([a], None) is a


def test_consistent_hash_sticks_and_moves_only_the_removed_instances_keys() -> None:
    ring = ConsistentHash()
    full = nodes("a", "b", "c", "d")
    ring.update(full)
    keys = [f"user-{i}" for i in range(2000)]
    first = {k: ring.pick(full, k).id for k in keys}
    assert {k: ring.pick(full, k).id for k in keys} == first
    share = collections.Counter(first.values())
    assert all(350 < n < 650 for n in share.values()), share  # 160 virtual nodes spread keys
    # an instance not a candidate (down, or tried): its keys go elsewhere, no other key moves
    without_b = [n for n in full if n.id != "b"]
    moved = {k for k in keys if ring.pick(without_b, k).id != first[k]}
    assert moved == {k for k in keys if first[k] == "b"}
    # removed from the registry: same result
    ring.update(without_b)
    assert {k for k in keys if ring.pick(without_b, k).id != first[k]} == moved
    # a call without a key goes round robin
    assert {ring.pick(without_b, None).id for _ in range(3)} == {"a", "c", "d"}


def test_make_balancer_validates() -> None:
    assert isinstance(make_balancer("p2c"), PowerOfTwoChoices)
    with pytest.raises(ConfigError, match="unknown balancer 'rr'"):
        make_balancer("rr")
    with pytest.raises(ConfigError, match="pick"):
        make_balancer(object())  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="replicas"):
        ConsistentHash(0)
    with pytest.raises(ConfigError, match="non-empty"), route_key(""):
        pass


class FakeChannels:
    def __init__(self) -> None:
        self.opened: list[str] = []
        self.closed: list[str] = []

    def open(self, inst: ServiceInstance) -> str:
        self.opened.append(inst.id)
        return f"chan-{inst.address}"

    def close(self, ep: Endpoint[str]) -> None:
        self.closed.append(ep.id)


def make_pool(accept: dict[str, str] | None = None) -> tuple[Pool[str], FakeChannels]:
    chans = FakeChannels()
    pool: Pool[str] = Pool(
        "svc", RoundRobin(), metadata_filter(accept), chans.open, chans.close, lambda ep: None
    )
    return pool, chans


def inst(i: str, **meta: str) -> ServiceInstance:
    return ServiceInstance("svc", i, f"10.0.0.{ord(i[0]) % 250}:1", meta)


def test_pool_closes_a_removed_endpoint_only_after_its_last_call() -> None:
    pool, chans = make_pool()
    pool.update([inst("a"), inst("b")])
    assert chans.opened == ["a", "b"]
    held = [pool.acquire(None, ()) for _ in range(4)]
    ep_a = next(ep for ep in held if ep.id == "a")
    pool.update([inst("b")])
    assert chans.closed == []  # two calls still in flight on a
    later = [pool.acquire(None, ()) for _ in range(4)]
    assert {ep.id for ep in later} == {"b"}  # no new call on a
    for ep in held:
        if ep.id == "a":
            pool.release(ep)
    assert chans.closed == ["a"] and ep_a.inflight == 0
    for ep in held + later:
        if ep.id == "b":
            pool.release(ep)
    pool.update([])  # b has nothing in flight: closed at once
    assert chans.closed == ["a", "b"]


def test_pool_prefers_ready_and_skips_tried_and_filters() -> None:
    pool, _ = make_pool({"version": "v2"})
    pool.update([inst("a", version="v2"), inst("b", version="v2"), inst("c", version="v1")])
    eps = {ep.id: ep for ep in pool.endpoints()}
    assert set(eps) == {"a", "b"}  # c filtered out
    pool.set_state(eps["a"], READY)
    pool.set_state(eps["b"], FAILING)
    assert {pool.acquire(None, ()).id for _ in range(4)} == {"a"}
    # every candidate tried: any other instance, even a failing one
    assert pool.acquire(None, [eps["a"]]).id == "b"
    pool.update([])
    with pytest.raises(NoReadyInstance) as info:
        pool.acquire(None, ())
    assert isinstance(info.value, NoInstanceAvailable)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_retry_rules() -> None:
    pool, _ = make_pool()
    pool.update([inst("a"), inst("b"), inst("c")])
    policy = RetryPolicy(max_attempts=3, idempotent={"/p.S/Get"})

    def plan(method: str) -> CallPlan[str]:
        p: CallPlan[str] = CallPlan(pool, policy, method, None, None)
        p.first()
        return p

    assert not_sent(REFUSED) and not not_sent(SOCKET_CLOSED)
    # not reached: retried for any method, at once, on an instance not tried yet
    put = plan("/p.S/Put")
    assert put.retry_after(REFUSED) == 0.0
    second = put.next()
    assert second is not put.tried[0]
    # reached (socket closed mid-call): only idempotent methods retry
    assert plan("/p.S/Put").retry_after(SOCKET_CLOSED) is None
    assert plan("/p.S/Get").retry_after(SOCKET_CLOSED) == 0.0
    assert plan("/p.S/Get").retry_after(INTERNAL) is None
    # bounded by max_attempts
    get = plan("/p.S/Get")
    get.next()
    assert get.retry_after(SOCKET_CLOSED) is not None  # 2 attempts so far
    get.next()
    assert get.retry_after(SOCKET_CLOSED) is None  # 3: done
    with pytest.raises(ConfigError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ConfigError, match="not one string"):
        RetryPolicy(idempotent="/p.S/Get")


def test_deadline_is_inherited_and_caps_the_timeout() -> None:
    pool, _ = make_pool()
    pool.update([inst("a")])
    policy = RetryPolicy()
    free: CallPlan[str] = CallPlan(pool, policy, "/p.S/M", None, None)
    assert free.timeout() is None
    with deadline(2.0):
        capped: CallPlan[str] = CallPlan(pool, policy, "/p.S/M", 10.0, None)
        shorter: CallPlan[str] = CallPlan(pool, policy, "/p.S/M", 0.5, None)
        with deadline(30.0):  # nested: the earlier deadline stays
            nested: CallPlan[str] = CallPlan(pool, policy, "/p.S/M", None, None)
    assert 1.5 < (capped.timeout() or 0) <= 2.0
    assert 0.0 < (shorter.timeout() or 0) <= 0.5
    assert 1.5 < (nested.timeout() or 0) <= 2.0


def test_route_key_from_contextvar_or_metadata() -> None:
    pool, _ = make_pool()
    policy = RetryPolicy()
    with route_key(42):
        assert CallPlan(pool, policy, "/p.S/M", None, None).key == "42"
        md = (("x-route-key", "u7"),)
        assert CallPlan(pool, policy, "/p.S/M", None, md).key == "u7"
    assert CallPlan(pool, policy, "/p.S/M", None, None).key is None


def test_trace_metadata_out_and_in() -> None:
    assert outgoing_metadata(None) is None
    assert outgoing_metadata((("a", "1"),)) == (("a", "1"),)
    with clog.trace_context("t-1"):
        assert outgoing_metadata(None) == ((TRACE_ID_METADATA, "t-1"),)
        assert outgoing_metadata([("a", "1")]) == (("a", "1"), (TRACE_ID_METADATA, "t-1"))
        mine = ((TRACE_ID_METADATA, "upstream"),)
        assert outgoing_metadata(mine) == mine  # the caller's own id wins
    seen: list[str | None] = []
    with bind_incoming(((TRACE_ID_METADATA, b"t-2"),), None):
        seen.append(clog.trace_id())
    seen.append(clog.trace_id())
    assert seen == ["t-2", None]
    with bind_incoming(((TRACE_ID_METADATA, "x" * 500),), 1e9):  # too long: not bound
        assert clog.trace_id() is None


def test_metadata_filter_forms() -> None:
    assert metadata_filter(None)(inst("a"))
    v2 = metadata_filter({"version": "v2", "zone": "z"})
    assert v2(inst("a", version="v2", zone="z"))
    assert not v2(inst("a", version="v2"))
    assert metadata_filter(lambda i: i.id == "b")(inst("b"))
    with pytest.raises(ConfigError, match="filters"):
        metadata_filter({"version": 2})  # type: ignore[dict-item]


def test_rpc_is_not_imported_by_coord() -> None:
    import subprocess

    code = "import sys, im_infra.coord; print('im_infra.coord.rpc' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_w3c_trace_context_travels_when_a_span_is_active() -> None:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    tracer = TracerProvider().get_tracer("test")
    assert outgoing_metadata(None) is None  # no span: nothing added
    with tracer.start_as_current_span("client") as span:
        ctx = span.get_span_context()
        md = dict(outgoing_metadata(None) or ())
        trace_hex = format(ctx.trace_id, "032x")
        assert str(md["traceparent"]).startswith(f"00-{trace_hex}-{format(ctx.span_id, '016x')}-")
        assert md[TRACE_ID_METADATA] == trace_hex  # clog's id is the span's trace id
    # server side: the incoming traceparent becomes the current context for the handler
    with bind_incoming(tuple(md.items()), None):
        incoming = trace.get_current_span().get_span_context()
        assert incoming.trace_id == ctx.trace_id and incoming.is_remote
        assert clog.trace_id() == trace_hex
    assert not trace.get_current_span().get_span_context().is_valid
