"""An in-memory etcd v3 key-value store behind coord's client interface (for tests).

:class:`MemoryStore` keeps keys with etcd's revision semantics (one store revision per write or
write transaction; create/mod revisions and versions per key), leases that expire when not kept
alive, watches that replay history from a start revision and then follow live changes, and
compaction. :class:`MemoryClient` is an :class:`EtcdClient` answering from a store instead of
over gRPC, so the real registry, config center, locks and instance IDs run on top of it
unchanged: only the transport is fake. A store can be shared by several clients (several
"processes") and made unavailable to exercise the degraded paths.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from im_infra.coord._internal.etcd import EtcdClient
from im_infra.coord._internal.model import (
    Compare,
    DeleteOp,
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
from im_infra.coord.errors import ConfigError, CoordError, CoordUnavailable

_MEMORY_ENDPOINT = "memory"


def _in_range(key: str, start: str, end: bytes | None) -> bool:
    """etcd's key-range rule: ``end`` None is the single key, b"\\0" means every key >= start."""
    if end is None:
        return key == start
    raw = key.encode()
    if raw < start.encode():
        return False
    return end == b"\0" or raw < end


@dataclass
class _Lease:
    id: int
    ttl: int
    deadline: float
    keys: set[str] = field(default_factory=set)


@dataclass
class _Watcher:
    start: str
    end: bytes | None
    queue: queue.Queue[WatchResponse | None]


class MemoryStore:
    """The shared state: keys, history, leases, watchers. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._kvs: dict[str, KeyValue] = {}
        self._revision = 1  # etcd's revision of an empty store
        self._compacted = 0
        self._history: list[tuple[int, WatchEvent]] = []
        self._leases: dict[int, _Lease] = {}
        self._lease_ids = itertools.count(0x1000)
        self._watchers: list[_Watcher] = []
        self._available = True
        self._reaper: threading.Thread | None = None

    # ------------------------------------------------------------------ faults
    @property
    def available(self) -> bool:
        return self._available

    def set_available(self, available: bool) -> None:
        """While unavailable every call raises CoordUnavailable and open watches break."""
        with self._lock:
            self._available = available
            if not available:
                for w in self._watchers:
                    w.queue.put(None)
                self._watchers.clear()

    def check(self, what: str) -> None:
        if not self._available:
            raise CoordUnavailable(f"etcd {what}: no endpoint answered (memory store is down)")

    def expire_leases(self) -> int:
        """Expire every lease now, as if its keepalives had stopped; returns how many."""
        with self._lock:
            ids = list(self._leases)
            for lease_id in ids:
                self._drop_lease(lease_id)
            return len(ids)

    # ------------------------------------------------------------------ writes (lock held)
    def _emit(self, events: list[WatchEvent], revision: int) -> None:
        for ev in events:
            self._history.append((revision, ev))
        for w in self._watchers:
            mine = [ev for ev in events if _in_range(ev.kv.key, w.start, w.end)]
            if mine:
                w.queue.put(WatchResponse(False, False, "", 0, revision, mine))

    def _put(self, key: str, value: bytes, lease: int, revision: int) -> WatchEvent:
        if not key:
            raise CoordError("etcd put: key is not provided")
        if lease and lease not in self._leases:
            raise CoordError("etcd put: etcdserver: requested lease not found")
        old = self._kvs.get(key)
        if old is not None and old.lease and old.lease in self._leases:
            self._leases[old.lease].keys.discard(key)
        kv = KeyValue(
            key,
            value,
            old.create_revision if old is not None else revision,
            revision,
            old.version + 1 if old is not None else 1,
            lease,
        )
        self._kvs[key] = kv
        if lease:
            self._leases[lease].keys.add(key)
        return WatchEvent("put", kv)

    def _delete(self, start: str, end: bytes | None, revision: int) -> list[WatchEvent]:
        events = []
        for key in sorted(k for k in self._kvs if _in_range(k, start, end)):
            old = self._kvs.pop(key)
            if old.lease and old.lease in self._leases:
                self._leases[old.lease].keys.discard(key)
            events.append(WatchEvent("delete", KeyValue(key, b"", 0, revision, 0, 0)))
        return events

    def _drop_lease(self, lease_id: int) -> None:
        lease = self._leases.pop(lease_id, None)
        self._lock.notify_all()  # the reaper re-plans (and ends with the last lease)
        if lease is None or not lease.keys:
            return
        self._revision += 1
        events = []
        for key in sorted(lease.keys):
            events.extend(self._delete(key, None, self._revision))
        if events:
            self._emit(events, self._revision)
        else:
            self._revision -= 1

    def _expire(self) -> None:
        now = time.monotonic()
        for lease in [le for le in self._leases.values() if le.deadline <= now]:
            self._drop_lease(lease.id)

    def _reap(self) -> None:
        """Expire leases on time (their keys' delete events reach the watches); the thread
        ends when no lease is left and :meth:`lease_grant` starts another."""
        with self._lock:
            while True:
                self._expire()
                if not self._leases:
                    self._reaper = None
                    return
                wait = min(le.deadline for le in self._leases.values()) - time.monotonic()
                self._lock.wait(max(0.01, min(wait, 1.0)))

    # ------------------------------------------------------------------ operations
    def range(
        self,
        key: str,
        end: bytes | None,
        *,
        limit: int,
        sort_target: Literal["key", "create", "mod"],
        descending: bool,
        max_create_revision: int,
        keys_only: bool,
        count_only: bool,
    ) -> RangeResult:
        with self._lock:
            self._expire()
            kvs = [kv for k, kv in self._kvs.items() if _in_range(k, key, end)]
            if max_create_revision:
                kvs = [kv for kv in kvs if kv.create_revision <= max_create_revision]
            sort_key = {
                "key": lambda kv: (kv.key.encode(), 0),
                "create": lambda kv: (b"", kv.create_revision),
                "mod": lambda kv: (b"", kv.mod_revision),
            }[sort_target]
            kvs.sort(key=sort_key, reverse=descending)
            count = len(kvs)
            if count_only:
                kvs = []
            if limit:
                kvs = kvs[:limit]
            if keys_only:
                kvs = [replace(kv, value=b"") for kv in kvs]
            return RangeResult(kvs, self._revision, count)

    def txn(
        self, compare: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op]
    ) -> TxnResult:
        with self._lock:
            self._expire()
            ok = all(self._holds(c) for c in compare)
            ops = success if ok else failure
            writes = any(not isinstance(op, GetOp) for op in ops)
            revision = self._revision + 1 if writes else self._revision
            # etcd checks every put's lease before applying any op of the transaction
            for op in ops:
                if isinstance(op, PutOp) and op.lease and op.lease not in self._leases:
                    raise CoordError("etcd transaction: etcdserver: requested lease not found")
            events: list[WatchEvent] = []
            responses: list[list[KeyValue] | int | None] = []
            for op in ops:
                if isinstance(op, PutOp):
                    events.append(self._put(op.key, op.value, op.lease, revision))
                    responses.append(None)
                elif isinstance(op, DeleteOp):
                    deleted = self._delete(op.key, None, revision)
                    events.extend(deleted)
                    responses.append(len(deleted))
                elif op.first_created:
                    found = [
                        kv
                        for k, kv in self._kvs.items()
                        if _in_range(k, op.key, prefix_end(op.key))
                    ]
                    found.sort(key=lambda kv: kv.create_revision)
                    responses.append(found[:1])
                else:
                    kv = self._kvs.get(op.key)
                    responses.append([] if kv is None else [kv])
            if writes:
                self._revision = revision
                if events:
                    self._emit(events, revision)
            return TxnResult(ok, self._revision, responses)

    def _holds(self, c: Compare) -> bool:
        kv = self._kvs.get(c.key)
        if c.target == "value":
            if kv is None:
                return False
            have: int | bytes = kv.value
        else:
            attr = {"create": "create_revision", "mod": "mod_revision"}.get(c.target, c.target)
            have = 0 if kv is None else getattr(kv, attr)
        want = c.value
        if type(have) is not type(want):
            raise CoordError(f"etcd transaction: bad compare value for {c.target}: {want!r}")
        if c.op == "==":
            return have == want
        if c.op == "!=":
            return have != want
        if c.op == ">":
            return have > want  # type: ignore[operator]
        return have < want  # type: ignore[operator]

    def delete(self, key: str, end: bytes | None) -> int:
        result = self.txn([], [DeleteOp(key)], []) if end is None else None
        if result is not None:
            deleted = result.responses[0]
            return deleted if isinstance(deleted, int) else 0
        with self._lock:
            self._expire()
            revision = self._revision + 1
            events = self._delete(key, end, revision)
            if events:
                self._revision = revision
                self._emit(events, revision)
            return len(events)

    def lease_grant(self, ttl: int) -> tuple[int, int]:
        if ttl < 1:
            raise CoordError(f"etcd lease grant: TTL must be >= 1 second, got {ttl}")
        with self._lock:
            lease_id = next(self._lease_ids)
            self._leases[lease_id] = _Lease(lease_id, ttl, time.monotonic() + ttl)
            if self._reaper is None:
                self._reaper = threading.Thread(
                    target=self._reap, name="im-infra-coord-memory-leases", daemon=True
                )
                self._reaper.start()
            self._lock.notify_all()
            return lease_id, ttl

    def lease_revoke(self, lease_id: int) -> None:
        with self._lock:
            self._drop_lease(lease_id)

    def lease_keepalive(self, lease_id: int) -> int:
        with self._lock:
            self._expire()
            lease = self._leases.get(lease_id)
            if lease is None:
                return 0
            lease.deadline = time.monotonic() + lease.ttl
            return lease.ttl

    def compact(self, revision: int) -> None:
        with self._lock:
            if revision > self._revision:
                raise CoordError(
                    "etcd compact: etcdserver: mvcc: required revision is a future revision"
                )
            self._compacted = max(self._compacted, revision)
            self._history = [(r, ev) for r, ev in self._history if r >= revision]

    def watch(self, key: str, end: bytes | None, start_revision: int) -> _Watcher:
        with self._lock:
            w = _Watcher(key, end, queue.Queue())
            w.queue.put(WatchResponse(True, False, "", 0, self._revision, []))
            if start_revision and start_revision < self._compacted:
                w.queue.put(
                    WatchResponse(False, True, "compacted", self._compacted, self._revision, [])
                )
                return w
            if start_revision:
                by_rev: dict[int, list[WatchEvent]] = {}
                for rev, ev in self._history:
                    if rev >= start_revision and _in_range(ev.kv.key, key, end):
                        by_rev.setdefault(rev, []).append(ev)
                for rev in sorted(by_rev):
                    w.queue.put(WatchResponse(False, False, "", 0, rev, by_rev[rev]))
            self._watchers.append(w)
            return w

    def unwatch(self, w: _Watcher) -> None:
        with self._lock:
            if w in self._watchers:
                self._watchers.remove(w)
        w.queue.put(None)


class MemoryWatchStream(WatchStream):
    """A watch on a :class:`MemoryStore`: the same iteration contract as a gRPC stream."""

    def __init__(self, store: MemoryStore, watcher: _Watcher, timeout: float | None) -> None:
        self.index = 0
        self.endpoint = _MEMORY_ENDPOINT
        self._store = store
        self._watcher = watcher
        self._deadline = None if timeout is None else time.monotonic() + timeout

    def responses(self) -> Iterator[WatchResponse]:
        while True:
            wait = None if self._deadline is None else self._deadline - time.monotonic()
            if wait is not None and wait <= 0:
                raise StreamBrokenError(f"{self.endpoint}: deadline exceeded")
            try:
                resp = self._watcher.queue.get(timeout=wait)
            except queue.Empty:
                continue
            if resp is None:
                raise StreamBrokenError(f"{self.endpoint}: the watch stream ended")
            yield resp

    def cancel(self) -> None:
        self._store.unwatch(self._watcher)


class MemoryClient(EtcdClient):
    """An :class:`EtcdClient` answering from a :class:`MemoryStore` (no gRPC, no network)."""

    def __init__(self, store: MemoryStore, *, timeout: float = 5.0) -> None:
        if timeout <= 0:
            raise ConfigError(f"etcd timeout must be > 0, got {timeout}")
        self.store = store
        self.timeout = timeout
        self.attempt_timeout = timeout
        self.endpoints = [_MEMORY_ENDPOINT]
        self._username = None
        self._password = None
        self._token = None
        self._current = 0
        self._lock = threading.Lock()
        self._closed = False

    @property
    def current_endpoint(self) -> str:
        return _MEMORY_ENDPOINT

    def _ready(self, what: str) -> MemoryStore:
        if self._closed:
            raise CoordError("the etcd client is closed")
        self.store.check(what)
        return self.store

    def authenticate(self, timeout: float | None = None) -> None:
        self._ready("authenticate")

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
        end = prefix_end(key) if prefix else range_end
        return self._ready(f"get {key!r}").range(
            key,
            end,
            limit=limit,
            sort_target=sort_target,
            descending=descending,
            max_create_revision=max_create_revision,
            keys_only=keys_only,
            count_only=count_only,
        )

    def put(self, key: str, value: bytes, *, lease: int = 0, timeout: float | None = None) -> int:
        return self._ready(f"put {key!r}").txn([], [PutOp(key, value, lease)], []).revision

    def delete(self, key: str, *, prefix: bool = False, timeout: float | None = None) -> int:
        return self._ready(f"delete {key!r}").delete(key, prefix_end(key) if prefix else None)

    def txn(
        self,
        compare: Sequence[Compare],
        success: Sequence[Op],
        failure: Sequence[Op] = (),
        *,
        timeout: float | None = None,
    ) -> TxnResult:
        return self._ready("transaction").txn(compare, success, failure)

    def lease_grant(self, ttl: int, *, timeout: float | None = None) -> tuple[int, int]:
        return self._ready("lease grant").lease_grant(ttl)

    def lease_revoke(self, lease_id: int, *, timeout: float | None = None) -> None:
        self._ready("lease revoke").lease_revoke(lease_id)

    def lease_keepalive_once(self, lease_id: int, *, timeout: float | None = None) -> int:
        return self._ready("lease keepalive").lease_keepalive(lease_id)

    def compact(self, revision: int, *, timeout: float | None = None) -> None:
        self._ready("compact").compact(revision)

    def status(self, *, timeout: float | None = None) -> str:
        self._ready("status")
        return "memory"

    def open_watch(
        self,
        key: str,
        *,
        prefix: bool,
        start_revision: int,
        progress_notify: bool = False,
        timeout: float | None = None,
    ) -> WatchStream:
        store = self._ready(f"watch {key!r}")
        watcher = store.watch(key, prefix_end(key) if prefix else None, start_revision)
        return MemoryWatchStream(store, watcher, timeout)

    def report_stream_failure(self, index: int, exc: object) -> None:
        return

    def close(self) -> None:
        self._closed = True
