"""The etcd client's failover, auth and error translation, without a server: the RPC is
replaced by a function that fails the way gRPC does (the lease keeper: test_lease.py)."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from im_infra.coord import (
    AuthenticationError,
    ConfigError,
    CoordError,
    CoordUnavailable,
    TLSError,
)
from im_infra.coord._internal.etcd import EtcdClient, _channel_options


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str = "") -> None:
        super().__init__()
        self._code = code
        self._details = details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


@pytest.fixture
def client() -> Any:
    c = EtcdClient(["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"], timeout=0.1)
    yield c
    c.close()


def test_fails_over_to_the_next_endpoint_and_stays(client: EtcdClient) -> None:
    tried: list[str] = []

    def rpc(ep: Any, timeout: float) -> str:
        tried.append(ep.target)
        if ep.target == "127.0.0.1:3":
            return "ok"
        raise FakeRpcError(grpc.StatusCode.UNAVAILABLE, "connection refused")

    assert client._call(rpc, "get") == "ok"
    assert tried == ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]
    assert client.current_endpoint == "127.0.0.1:3"
    tried.clear()
    assert client._call(rpc, "get") == "ok"
    assert tried == ["127.0.0.1:3"]


def test_all_endpoints_down_names_each(client: EtcdClient) -> None:
    def rpc(ep: Any, timeout: float) -> str:
        assert 0 < timeout <= 0.1
        raise FakeRpcError(grpc.StatusCode.DEADLINE_EXCEEDED, f"slow {ep.target}")

    with pytest.raises(CoordUnavailable) as info:
        client._call(rpc, "put 'k'")
    msg = str(info.value)
    assert "put 'k'" in msg
    for port in (1, 2, 3):
        assert f"127.0.0.1:{port}: slow 127.0.0.1:{port}" in msg


@pytest.mark.parametrize(
    "detail",
    [
        "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:2: Tls handshake"
        " failed (TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: CERTIFICATE_VERIFY_FAILED",
        "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:2: Custom "
        "verification check failed with error: UNAUTHENTICATED: Hostname Verification Check "
        "failed.",
    ],
)
def test_tls_failure_on_any_endpoint_is_a_tls_error(client: EtcdClient, detail: str) -> None:
    def rpc(ep: Any, timeout: float) -> str:
        text = detail if ep.target == "127.0.0.1:2" else "connection refused"
        raise FakeRpcError(grpc.StatusCode.UNAVAILABLE, text)

    with pytest.raises(TLSError, match="TLS certificate problem") as info:
        client._call(rpc, "get 'k'")
    assert isinstance(info.value, CoordUnavailable)
    assert "127.0.0.1:1: connection refused" in str(info.value)  # every endpoint still named


def test_endpoint_coming_back_within_the_budget_is_used(client: EtcdClient) -> None:
    calls = 0

    def rpc(ep: Any, timeout: float) -> str:
        nonlocal calls
        calls += 1
        if calls <= 4:  # every endpoint refuses at first (channels still reconnecting)
            raise FakeRpcError(grpc.StatusCode.UNAVAILABLE, "refused")
        return "ok"

    assert client._call(rpc, "get") == "ok"
    assert calls == 5


@pytest.mark.parametrize(
    ("code", "details", "error"),
    [
        (grpc.StatusCode.PERMISSION_DENIED, "etcdserver: permission denied", AuthenticationError),
        (grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: user name is empty", AuthenticationError),
        (grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: key is not provided", CoordError),
        (grpc.StatusCode.FAILED_PRECONDITION, "etcdserver: lease not found", CoordError),
    ],
)
def test_errors_are_translated_without_failover(
    client: EtcdClient, code: grpc.StatusCode, details: str, error: type[Exception]
) -> None:
    tried: list[str] = []

    def rpc(ep: Any, timeout: float) -> str:
        tried.append(ep.target)
        raise FakeRpcError(code, details)

    with pytest.raises(error, match=details) as info:
        client._call(rpc, "get 'k'")
    assert isinstance(info.value.__cause__, grpc.RpcError)
    assert tried == ["127.0.0.1:1"]


def test_invalid_token_is_renewed_once() -> None:
    # a deadline the fake RPC never nears: with 0.1 s a loaded machine (CI running the unit
    # tests beside the integration tests) passed it before the first try ("no endpoint answered")
    c = EtcdClient(["127.0.0.1:1"], username="u", password="pw-not-logged", timeout=5)
    tokens = iter(["t1", "t2"])
    auths = 0

    def fake_auth(timeout: float | None = None) -> None:
        nonlocal auths
        auths += 1
        c._token = next(tokens)

    c.authenticate = fake_auth  # type: ignore[method-assign]
    seen: list[str | None] = []

    def rpc(ep: Any, timeout: float) -> str:
        seen.append(c._token)
        if c._token == "t1":
            raise FakeRpcError(grpc.StatusCode.UNAUTHENTICATED, "etcdserver: invalid auth token")
        return "ok"

    assert c._call(rpc, "get") == "ok"
    assert seen == ["t1", "t2"]
    assert auths == 2
    assert c._metadata() == (("token", "t2"),)
    assert c._metadata(require_leader=True) == (("token", "t2"), ("hasleader", "true"))
    c.close()


def test_closed_client_refuses_calls(client: EtcdClient) -> None:
    client.close()
    client.close()
    with pytest.raises(CoordError, match="closed"):
        client._call(lambda ep, t: "never", "get")


def test_each_attempt_is_bounded_below_the_call_timeout_and_doubles() -> None:
    """A call the dead leader never answers is cut at attempt_timeout and retried on the next
    member; every attempt that runs out doubles the bound (a slow etcd still gets its time)."""
    c = EtcdClient(["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"], timeout=5, attempt_timeout=0.2)
    seen: list[tuple[str, float]] = []

    def rpc(ep: Any, timeout: float) -> str:
        seen.append((ep.target, round(timeout, 3)))
        if len(seen) < 4:
            raise FakeRpcError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
        return "ok"

    try:
        assert c._call(rpc, "put 'k'") == "ok"
    finally:
        c.close()
    assert seen == [
        ("127.0.0.1:1", 0.2),
        ("127.0.0.1:2", 0.4),
        ("127.0.0.1:3", 0.8),
        ("127.0.0.1:1", 1.6),
    ]


def test_attempt_timeout_never_exceeds_the_call_timeout_and_is_checked() -> None:
    c = EtcdClient(["127.0.0.1:1"], timeout=0.5)
    try:
        assert c.attempt_timeout == 0.5
    finally:
        c.close()
    with pytest.raises(ConfigError, match="attempt_timeout"):
        EtcdClient(["127.0.0.1:1"], attempt_timeout=0)


def test_keepalive_options_detect_a_blackholed_link() -> None:
    """gRPC core >= 1.60 waits grpc.http2.ping_timeout_ms (60 s by default) for a ping's answer,
    whatever keepalive_timeout_ms says, and stops pinging after 2 pings without data: both
    must be set, or a watch on a blackholed link stays silent for a minute or more."""
    options = dict(_channel_options(7.5, 3.0))
    assert options["grpc.keepalive_time_ms"] == 7500
    assert options["grpc.keepalive_timeout_ms"] == 3000
    assert options["grpc.http2.ping_timeout_ms"] == 3000
    assert options["grpc.http2.max_pings_without_data"] == 0
    assert options["grpc.keepalive_permit_without_calls"] == 0
    c = EtcdClient(["127.0.0.1:1"], keepalive_time=8, keepalive_timeout=2)
    try:
        assert (c.keepalive_time, c.keepalive_timeout) == (8, 2)
    finally:
        c.close()


def test_bad_keepalive_settings() -> None:
    with pytest.raises(ConfigError, match="keepalive_time"):
        EtcdClient(["127.0.0.1:1"], keepalive_time=0.5)
    with pytest.raises(ConfigError, match="keepalive_timeout"):
        EtcdClient(["127.0.0.1:1"], keepalive_timeout=0)
