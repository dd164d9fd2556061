"""coord's own etcd v3 client, implemented on pyetcd's generated gRPC stubs (the data it speaks,
keys, revisions, transactions, watch responses, is ``model.py``'s).

Nothing outside ``_internal`` touches pyetcd or gRPC: swapping the client library means rewriting
this module only. What this layer adds over pyetcd's thin client:

- failover: every call goes to the current endpoint; when it is unreachable (UNAVAILABLE,
  DEADLINE_EXCEEDED) the next endpoint is tried, until each endpoint was tried once;
- a timeout on every call, so a dead etcd never hangs a caller, and a shorter bound on each
  attempt (``attempt_timeout``, doubled at every attempt that runs out): a call in flight when
  the leader dies (sent to it, or to a follower that forwarded it) is never answered, and
  would otherwise stall for the whole call timeout although the election takes a fraction of
  a second; cut short, it fails over to another member and is retried there;
- username/password auth with a token that is re-acquired when etcd reports it invalid;
- TLS (CA, client certificate and key) for every endpoint;
- translation of gRPC errors into coord's exceptions.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from urllib.parse import urlsplit

from im_infra.coord._internal.lazy import LazyModule
from im_infra.coord._internal.model import (
    Compare,
    GetOp,
    KeyValue,
    Op,
    PutOp,
    RangeResult,
    StreamBrokenError,
    TxnResult,
    WatchEvent,
    WatchResponse,
    WatchStream,
    prefix_end,
)
from im_infra.coord.errors import (
    AuthenticationError,
    ConfigError,
    CoordError,
    CoordUnavailable,
    TLSError,
)

if TYPE_CHECKING:
    import grpc
    from pyetcd import etcdrpc
else:  # imported on first use: `import im_infra.coord` must not load grpc (docs/releasing.md)
    grpc = LazyModule("grpc")
    etcdrpc = LazyModule("pyetcd.etcdrpc")

T = TypeVar("T")

DEFAULT_KEEPALIVE_TIME = 6.0
"""Seconds between gRPC keepalive pings on a connection with a call open (a watch stream, a
call in flight). etcd's ``--grpc-keepalive-min-time`` (default 5 s) is the lower limit: pings
more frequent than that make etcd close the connection ("too_many_pings")."""
DEFAULT_KEEPALIVE_TIMEOUT = 4.0
"""Seconds without the ping's answer after which the connection counts as dead."""


def _channel_options(keepalive_time: float, keepalive_timeout: float) -> list[tuple[str, int]]:
    """Reconnect quickly once a member is back, and notice a dead peer (a blackholed link: no
    reset, no close) within ``keepalive_time + keepalive_timeout``: keepalive pings on every
    connection with a call open, *also* while nothing is sent. Two gRPC defaults left an idle
    watch on a blackholed link silent for 60 s and more: since gRPC core 1.60 (grpc/grpc#34647)
    the wait for a ping's answer is ``grpc.http2.ping_timeout_ms`` (default 60 s), which
    overrides ``keepalive_timeout_ms``, so both are set; and gRPC stops pinging after 2 pings
    without data (``max_pings_without_data``; 0 lifts that limit). No pings while no call is
    open (``keepalive_permit_without_calls`` stays 0): etcd counts those as abuse."""
    return [
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 500),
        ("grpc.keepalive_time_ms", round(keepalive_time * 1000)),
        ("grpc.keepalive_timeout_ms", round(keepalive_timeout * 1000)),
        ("grpc.http2.ping_timeout_ms", round(keepalive_timeout * 1000)),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.keepalive_permit_without_calls", 0),
        ("grpc.enable_retries", 0),
        ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ]


# UNIMPLEMENTED: the endpoint answers, but it is not etcd (a wrong port, a proxy).
_FAILOVER_CODES = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "UNIMPLEMENTED"})
_RETRY_PAUSE = 0.05
DEFAULT_ATTEMPT_TIMEOUT = 1.0
"""The first attempt of a call gets at most this long (never more than the call's timeout);
each attempt that runs out doubles it for the next, so a slow but working etcd still answers."""


def _kv(msg: Any) -> KeyValue:
    return KeyValue(
        key=msg.key.decode("utf-8", "replace"),
        value=bytes(msg.value),
        create_revision=int(msg.create_revision),
        mod_revision=int(msg.mod_revision),
        version=int(msg.version),
        lease=int(msg.lease),
    )


def parse_endpoint(spec: str) -> tuple[str, bool]:
    """Turn "host:port", "http://host:port" or "https://host:port" into ("host:port", tls)."""
    text = spec.strip()
    if not text:
        raise ConfigError("etcd endpoint list contains an empty entry")
    tls = False
    if "://" in text:
        parts = urlsplit(text)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"etcd endpoint {spec!r}: expected host:port or http(s)://host:port")
        tls = parts.scheme == "https"
        try:
            port = parts.port
        except ValueError as exc:
            raise ConfigError(f"etcd endpoint {spec!r}: port is not a number") from exc
        host = parts.hostname
        if ":" in host:
            host = f"[{host}]"
        return f"{host}:{port or 2379}", tls
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(f"etcd endpoint {spec!r}: expected host:port with a port in 1..65535")
    return text, tls


@dataclass(frozen=True)
class TlsFiles:
    """Paths of the PEM files for TLS; ``ca_cert`` None means the system roots."""

    ca_cert: str | None = None
    cert_cert: str | None = None
    cert_key: str | None = None

    def credentials(self) -> Any:
        if (self.cert_cert is None) != (self.cert_key is None):
            raise ConfigError("etcd TLS: cert_cert and cert_key must be given together")

        def read(path: str | None, what: str) -> bytes | None:
            if path is None:
                return None
            try:
                return Path(path).read_bytes()
            except OSError as exc:
                raise ConfigError(f"etcd TLS {what} file {path}: {exc.strerror}") from exc

        return grpc.ssl_channel_credentials(
            root_certificates=read(self.ca_cert, "CA certificate"),
            private_key=read(self.cert_key, "client key"),
            certificate_chain=read(self.cert_cert, "client certificate"),
        )

    @property
    def enabled(self) -> bool:
        return any(p is not None for p in (self.ca_cert, self.cert_cert, self.cert_key))


class _Endpoint:
    def __init__(self, target: str, creds: Any | None, options: list[tuple[str, int]]) -> None:
        self.target = target
        if creds is not None:
            self.channel = grpc.secure_channel(target, creds, options=options)
        else:
            self.channel = grpc.insecure_channel(target, options=options)
        self.kv = etcdrpc.KVStub(self.channel)
        self.lease = etcdrpc.LeaseStub(self.channel)
        self.watch = etcdrpc.WatchStub(self.channel)
        self.auth = etcdrpc.AuthStub(self.channel)
        self.maintenance = etcdrpc.MaintenanceStub(self.channel)

    def close(self) -> None:
        self.channel.close()


_TLS_FAILURES = ("handshake failed", "peer certificate", "hostname verification")
"""In gRPC's detail when TLS failed: "Tls handshake failed (TSI_PROTOCOL_FAILURE): ...
CERTIFICATE_VERIFY_FAILED", "Hostname Verification Check failed", "Peer name h is not in peer
certificate" (older gRPC)."""


def _fails_over(code: Any) -> bool:
    """Whether a gRPC status code means "try the next endpoint" (by name: grpc not imported)."""
    return getattr(code, "name", None) in _FAILOVER_CODES


def _translate(exc: grpc.RpcError, what: str) -> CoordError:
    code = exc.code()
    detail = exc.details() or str(code)
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        return AuthenticationError(f"etcd refused {what}: {detail}")
    if code == grpc.StatusCode.INVALID_ARGUMENT and (
        "user name is empty" in detail or "authentication failed" in detail
    ):
        return AuthenticationError(f"etcd refused {what}: {detail}")
    if "authentication is not enabled" in detail:
        return AuthenticationError(
            f"etcd refused {what}: {detail} (credentials were given, but this etcd has no auth)"
        )
    if _fails_over(code):
        return CoordUnavailable(f"etcd {what} failed: {detail}")
    return CoordError(f"etcd {what} failed ({code.name}): {detail}")


class EtcdClient:
    """A small, thread-safe etcd v3 client with failover, auth, TLS and per-call timeouts."""

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        username: str | None = None,
        password: str | None = None,
        tls: TlsFiles | None = None,
        timeout: float = 5.0,
        attempt_timeout: float | None = None,
        keepalive_time: float = DEFAULT_KEEPALIVE_TIME,
        keepalive_timeout: float = DEFAULT_KEEPALIVE_TIMEOUT,
    ) -> None:
        if not endpoints:
            raise ConfigError(
                "no etcd endpoints given (pass endpoints= or set IM_INFRA_ETCD_ENDPOINTS)"
            )
        if timeout <= 0:
            raise ConfigError(f"etcd timeout must be > 0, got {timeout}")
        if attempt_timeout is not None and not attempt_timeout > 0:
            raise ConfigError(f"etcd attempt_timeout must be > 0, got {attempt_timeout}")
        if not keepalive_time >= 1:
            raise ConfigError(f"etcd keepalive_time must be >= 1 second, got {keepalive_time}")
        if not keepalive_timeout > 0:
            raise ConfigError(f"etcd keepalive_timeout must be > 0, got {keepalive_timeout}")
        if (username is None) != (password is None):
            raise ConfigError("etcd auth: username and password must be given together")
        parsed = [parse_endpoint(e) for e in endpoints]
        tls = tls or TlsFiles()
        use_tls = tls.enabled or any(t for _, t in parsed)
        creds = tls.credentials() if use_tls else None
        self.timeout = timeout
        self.attempt_timeout = min(
            timeout, attempt_timeout if attempt_timeout is not None else DEFAULT_ATTEMPT_TIMEOUT
        )
        self.endpoints = [target for target, _ in parsed]
        self.keepalive_time = keepalive_time
        self.keepalive_timeout = keepalive_timeout
        options = _channel_options(keepalive_time, keepalive_timeout)
        self._eps = [_Endpoint(target, creds, options) for target in self.endpoints]
        self._username = username
        self._password = password
        self._token: str | None = None
        self._current = 0
        self._lock = threading.Lock()
        self._closed = False

    # ------------------------------------------------------------------ plumbing
    @property
    def current_endpoint(self) -> str:
        return self._eps[self._current].target

    @property
    def closed(self) -> bool:
        return self._closed

    def _metadata(self, *, require_leader: bool = False) -> tuple[tuple[str, str], ...] | None:
        items: list[tuple[str, str]] = []
        token = self._token
        if token:
            items.append(("token", token))
        if require_leader:
            # etcd then ends the stream when its member loses the leader (e.g. is partitioned),
            # instead of keeping a silent stream open; the watch loop moves to another member.
            items.append(("hasleader", "true"))
        return tuple(items) or None

    def _advance(self, failed: int) -> None:
        with self._lock:
            if self._current == failed:
                self._current = (failed + 1) % len(self._eps)

    def authenticate(self, timeout: float | None = None) -> None:
        """Get a fresh auth token (no-op without credentials). Raises AuthenticationError."""
        if self._username is None:
            return
        request = etcdrpc.AuthenticateRequest(name=self._username, password=self._password)

        def call(ep: _Endpoint, t: float) -> Any:
            return ep.auth.Authenticate(request, timeout=t)

        resp = self._call(call, "authenticate", timeout=timeout, authenticated=False)
        self._token = str(resp.token)

    def _call(
        self,
        fn: Callable[[_Endpoint, float], T],
        what: str,
        *,
        timeout: float | None = None,
        authenticated: bool = True,
    ) -> T:
        if self._closed:
            raise CoordError("the etcd client is closed")
        per_try = timeout if timeout is not None else self.timeout
        if authenticated and self._username is not None and self._token is None:
            self.authenticate(per_try)
        # Every endpoint may use up to per_try; endpoints that refuse at once (down, or a channel
        # still backing off after an outage) are tried again until that budget is spent. Each
        # attempt is bounded by `attempt` (doubled whenever one runs out), so a call the dead
        # leader will never answer moves to another member instead of using the whole budget.
        deadline = time.monotonic() + per_try * len(self._eps)
        attempt = min(per_try, self.attempt_timeout)
        failures: dict[str, str] = {}
        reauthed = False
        while True:
            for _ in range(len(self._eps)):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                index = self._current
                ep = self._eps[index]
                try:
                    return fn(ep, min(attempt, remaining))
                except grpc.RpcError as exc:
                    code = exc.code()
                    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                        attempt = min(per_try, attempt * 2)
                    if (
                        authenticated
                        and code == grpc.StatusCode.UNAUTHENTICATED
                        and self._username is not None
                        and not reauthed
                    ):
                        reauthed = True
                        self._token = None
                        self.authenticate(per_try)
                        continue  # the same endpoint again, with the new token
                    if not _fails_over(code):
                        raise _translate(exc, what) from exc
                    failures[ep.target] = exc.details() or code.name
                    self._advance(index)
                except ValueError as exc:  # grpc raises this on a closed channel
                    if self._closed:
                        raise CoordError("the etcd client is closed") from exc
                    raise
            if time.monotonic() + _RETRY_PAUSE >= deadline:
                break
            time.sleep(_RETRY_PAUSE)
        detail = "; ".join(f"{target}: {err}" for target, err in failures.items())
        if any(m in err.lower() for err in failures.values() for m in _TLS_FAILURES):
            raise TLSError(
                f"etcd {what}: TLS certificate problem (check ca_cert, cert_cert/cert_key and "
                f"that the endpoint's host is named in the server certificate): {detail}"
            )
        raise CoordUnavailable(
            f"etcd {what}: no endpoint answered within {per_try:g}s each ({detail})"
        )

    # ------------------------------------------------------------------ KV
    def range(
        self,
        key: str,
        *,
        prefix: bool = False,
        range_end: bytes | None = None,
        limit: int = 0,
        sort_target: Literal["key", "create", "mod"] = "key",
        descending: bool = False,
        max_create_revision: int = 0,
        keys_only: bool = False,
        count_only: bool = False,
        timeout: float | None = None,
    ) -> RangeResult:
        """Read one key, or every key under ``key`` when ``prefix`` is true."""
        req = etcdrpc.RangeRequest(key=key.encode(), limit=limit, keys_only=keys_only)
        req.count_only = count_only
        if prefix:
            req.range_end = prefix_end(key)
        elif range_end is not None:
            req.range_end = range_end
        targets = {
            "key": etcdrpc.RangeRequest.KEY,
            "create": etcdrpc.RangeRequest.CREATE,
            "mod": etcdrpc.RangeRequest.MOD,
        }
        req.sort_target = targets[sort_target]
        if descending or sort_target != "key":
            req.sort_order = (
                etcdrpc.RangeRequest.DESCEND if descending else etcdrpc.RangeRequest.ASCEND
            )
        if max_create_revision:
            req.max_create_revision = max_create_revision

        def call(ep: _Endpoint, t: float) -> Any:
            return ep.kv.Range(req, timeout=t, metadata=self._metadata())

        resp = self._call(call, f"get {key!r}", timeout=timeout)
        return RangeResult(
            kvs=[_kv(kv) for kv in resp.kvs],
            revision=int(resp.header.revision),
            count=int(resp.count),
        )

    def get(self, key: str, *, timeout: float | None = None) -> KeyValue | None:
        """The key's current value and revisions, or None when absent."""
        result = self.range(key, timeout=timeout)
        return result.kvs[0] if result.kvs else None

    def put(self, key: str, value: bytes, *, lease: int = 0, timeout: float | None = None) -> int:
        """Write ``key``; returns the new store revision."""
        req = etcdrpc.PutRequest(key=key.encode(), value=value, lease=lease)

        def call(ep: _Endpoint, t: float) -> Any:
            return ep.kv.Put(req, timeout=t, metadata=self._metadata())

        return int(self._call(call, f"put {key!r}", timeout=timeout).header.revision)

    def delete(self, key: str, *, prefix: bool = False, timeout: float | None = None) -> int:
        """Delete ``key`` (or every key under it); returns how many keys were deleted."""
        req = etcdrpc.DeleteRangeRequest(key=key.encode())
        if prefix:
            req.range_end = prefix_end(key)

        def call(ep: _Endpoint, t: float) -> Any:
            return ep.kv.DeleteRange(req, timeout=t, metadata=self._metadata())

        return int(self._call(call, f"delete {key!r}", timeout=timeout).deleted)

    def txn(
        self,
        compare: Sequence[Compare],
        success: Sequence[Op],
        failure: Sequence[Op] = (),
        *,
        timeout: float | None = None,
    ) -> TxnResult:
        """Run an etcd transaction: if every ``compare`` holds run ``success`` else ``failure``."""
        req = etcdrpc.TxnRequest(
            compare=[_compare(c) for c in compare],
            success=[_request_op(o) for o in success],
            failure=[_request_op(o) for o in failure],
        )

        def call(ep: _Endpoint, t: float) -> Any:
            return ep.kv.Txn(req, timeout=t, metadata=self._metadata())

        keys = ", ".join(repr(c.key) for c in compare)
        resp = self._call(call, f"transaction on {keys}", timeout=timeout)
        responses: list[list[KeyValue] | int | None] = []
        for item in resp.responses:
            kind = item.WhichOneof("response")
            if kind == "response_range":
                responses.append([_kv(kv) for kv in item.response_range.kvs])
            elif kind == "response_delete_range":
                responses.append(int(item.response_delete_range.deleted))
            else:
                responses.append(None)
        return TxnResult(bool(resp.succeeded), int(resp.header.revision), responses)

    # ------------------------------------------------------------------ leases
    def lease_grant(self, ttl: int, *, timeout: float | None = None) -> tuple[int, int]:
        """Create a lease; returns (lease id, granted TTL in seconds)."""
        req = etcdrpc.LeaseGrantRequest(TTL=ttl)

        def call(ep: _Endpoint, t: float) -> Any:
            return ep.lease.LeaseGrant(req, timeout=t, metadata=self._metadata())

        resp = self._call(call, "lease grant", timeout=timeout)
        if resp.error:
            raise CoordError(f"etcd lease grant failed: {resp.error}")
        return int(resp.ID), int(resp.TTL)

    def lease_revoke(self, lease_id: int, *, timeout: float | None = None) -> None:
        """Revoke a lease (its keys are deleted). A lease that is already gone is fine."""
        req = etcdrpc.LeaseRevokeRequest(ID=lease_id)

        def call(ep: _Endpoint, t: float) -> Any:
            return ep.lease.LeaseRevoke(req, timeout=t, metadata=self._metadata())

        try:
            self._call(call, "lease revoke", timeout=timeout)
        except CoordError as exc:
            if "lease not found" not in str(exc):
                raise

    def lease_keepalive_once(self, lease_id: int, *, timeout: float | None = None) -> int:
        """Refresh a lease once; returns its new TTL, or 0 when the lease no longer exists."""
        req = etcdrpc.LeaseKeepAliveRequest(ID=lease_id)

        def call(ep: _Endpoint, t: float) -> int:
            stream = ep.lease.LeaseKeepAlive(iter([req]), timeout=t, metadata=self._metadata())
            for resp in stream:
                return int(resp.TTL)
            return 0

        return self._call(call, "lease keepalive", timeout=timeout)

    def compact(self, revision: int, *, timeout: float | None = None) -> None:
        """Discard the history before ``revision`` (operations and tests)."""
        req = etcdrpc.CompactionRequest(revision=revision, physical=True)

        def call(ep: _Endpoint, t: float) -> Any:
            return ep.kv.Compact(req, timeout=t, metadata=self._metadata())

        self._call(call, "compact", timeout=timeout)

    def status(self, *, timeout: float | None = None) -> str:
        """The version of the etcd member currently in use (a cheap health probe)."""

        def call(ep: _Endpoint, t: float) -> Any:
            return ep.maintenance.Status(
                etcdrpc.StatusRequest(), timeout=t, metadata=self._metadata()
            )

        return str(self._call(call, "status", timeout=timeout).version)

    # ------------------------------------------------------------------ watch
    def open_watch(
        self,
        key: str,
        *,
        prefix: bool,
        start_revision: int,
        progress_notify: bool = False,
        timeout: float | None = None,
    ) -> WatchStream:
        """Open a watch stream on the current endpoint (no failover here: the caller's re-watch
        loop retries, which moves to the next endpoint)."""
        if self._closed:
            raise CoordError("the etcd client is closed")
        if self._username is not None and self._token is None:
            self.authenticate()
        create = etcdrpc.WatchCreateRequest(
            key=key.encode(), start_revision=start_revision, progress_notify=progress_notify
        )
        if prefix:
            create.range_end = prefix_end(key)
        index = self._current
        ep = self._eps[index]

        def open_call(requests: Iterator[Any]) -> Any:
            return ep.watch.Watch(
                requests, timeout=timeout, metadata=self._metadata(require_leader=True)
            )

        request = etcdrpc.WatchRequest(create_request=create)
        return GrpcWatchStream(self, index, ep.target, request, open_call)

    def report_stream_failure(self, index: int, exc: grpc.RpcError) -> None:
        """Called by a watch whose stream failed: fail over if the endpoint is unreachable,
        drop the token when etcd says it is invalid."""
        code = exc.code()
        if _fails_over(code):
            self._advance(index)
        elif code == grpc.StatusCode.UNAUTHENTICATED:
            self._token = None

    def close(self) -> None:
        """Close every channel (idempotent). Calls in flight fail with a CoordError."""
        if self._closed:
            return
        self._closed = True
        for ep in self._eps:
            ep.close()


class GrpcWatchStream(WatchStream):
    """One open etcd watch stream over gRPC (made by :meth:`EtcdClient.open_watch`)."""

    _STOP = object()

    def __init__(
        self,
        client: EtcdClient,
        index: int,
        endpoint: str,
        create: Any,
        open_call: Callable[[Iterator[Any]], Any],
    ) -> None:
        self._client = client
        self.index = index
        self.endpoint = endpoint
        self._requests: queue.Queue[Any] = queue.Queue()
        self._requests.put(create)
        self._call = open_call(self._request_iter())

    def _request_iter(self) -> Iterator[Any]:
        while True:
            item = self._requests.get()
            if item is self._STOP:
                return
            yield item

    def responses(self) -> Iterator[WatchResponse]:
        """Yield each response; raises StreamBrokenError when the stream breaks."""
        try:
            for resp in self._call:
                yield _watch_response(resp)
        except grpc.RpcError as exc:
            self._client.report_stream_failure(self.index, exc)
            raise StreamBrokenError(f"{self.endpoint}: {exc.details() or exc.code().name}") from exc
        raise StreamBrokenError(f"{self.endpoint}: the server closed the watch stream")

    def cancel(self) -> None:
        """Stop the stream (idempotent, safe from any thread)."""
        self._requests.put(self._STOP)
        self._call.cancel()


def _watch_response(resp: Any) -> WatchResponse:
    return WatchResponse(
        created=bool(resp.created),
        canceled=bool(resp.canceled),
        cancel_reason=str(resp.cancel_reason),
        compact_revision=int(resp.compact_revision),
        revision=int(resp.header.revision),
        events=[WatchEvent("delete" if ev.type == 1 else "put", _kv(ev.kv)) for ev in resp.events],
    )


_CMP_TARGET = {
    "create": ("CREATE", "create_revision"),
    "mod": ("MOD", "mod_revision"),
    "version": ("VERSION", "version"),
    "value": ("VALUE", "value"),
    "lease": ("LEASE", "lease"),
}
_CMP_OP = {"==": "EQUAL", "!=": "NOT_EQUAL", ">": "GREATER", "<": "LESS"}


def _compare(c: Compare) -> Any:
    target, attr = _CMP_TARGET[c.target]
    msg = etcdrpc.Compare(
        key=c.key.encode(),
        target=getattr(etcdrpc.Compare, target),
        result=getattr(etcdrpc.Compare, _CMP_OP[c.op]),
    )
    setattr(msg, attr, c.value)
    return msg


def _request_op(op: Op) -> Any:
    if isinstance(op, PutOp):
        return etcdrpc.RequestOp(
            request_put=etcdrpc.PutRequest(key=op.key.encode(), value=op.value, lease=op.lease)
        )
    if isinstance(op, GetOp):
        req = etcdrpc.RangeRequest(key=op.key.encode())
        if op.first_created:
            req.range_end = prefix_end(op.key)
            req.sort_target = etcdrpc.RangeRequest.CREATE
            req.sort_order = etcdrpc.RangeRequest.ASCEND
            req.limit = 1
        return etcdrpc.RequestOp(request_range=req)
    return etcdrpc.RequestOp(request_delete_range=etcdrpc.DeleteRangeRequest(key=op.key.encode()))
