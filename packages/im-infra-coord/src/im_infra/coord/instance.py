"""Instance IDs: a small integer unique among the live instances of a service.

The ID is the key ``/im-infra/instance/{service}/{id}``, created by a create-if-absent
transaction and bound to a lease kept alive by the provider's keepalive thread. When the
process dies the lease expires (after its TTL) and the ID is free again. A free ID is chosen at
random, so a restarted process normally gets a different ID than before (the seed's rule) and
concurrent starters rarely collide.

A *sticky* allocator (``sticky=True``, for identities that should survive a restart in place,
such as a Kafka consumer's static-membership ``group.instance.id``) instead gives a restarted
process its predecessor's ID: when IDs are held by other processes of the same host at start
(possibly one that just died, its lease not yet expired), it waits up to the lease TTL + 1 s for
one of them to be freed and takes that one; otherwise (or after the wait: they are live siblings)
it takes the lowest free ID. A process cannot tell a dead predecessor from a live sibling on the
same host (PID namespaces), so only the lease's expiry decides, and nothing is ever taken over
while its lease lives.
"""

from __future__ import annotations

import json
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

from im_infra.coord._internal.etcd import EtcdClient
from im_infra.coord._internal.lease import KeptLease, LeaseKeeper
from im_infra.coord._internal.log import log
from im_infra.coord._internal.model import Compare, GetOp, KeyValue, PutOp
from im_infra.coord.deprecation import warn_renamed
from im_infra.coord.errors import ConfigError, CoordError, InstanceIdExhausted

if TYPE_CHECKING:
    from im_infra.coord.protocols import Instancer

INSTANCE_ROOT = "/im-infra/instance/"
DEFAULT_MAX_ID = 1023  # Snowflake's 10 worker bits
DEFAULT_INSTANCE_TTL = 10

_log = log.named("instance")


class EtcdInstancer:
    """The etcd-backed :class:`~im_infra.coord.Instancer` for one service."""

    def __init__(
        self,
        client: EtcdClient,
        keeper: LeaseKeeper,
        service: str,
        *,
        max_id: int = DEFAULT_MAX_ID,
        ttl: int = DEFAULT_INSTANCE_TTL,
        sticky: bool = False,
    ) -> None:
        if not service or "/" in service:
            raise ConfigError(f"invalid service name {service!r}: must be non-empty without '/'")
        if max_id < 0:
            raise ConfigError(f"max_id must be >= 0, got {max_id}")
        if ttl < 1:
            raise ConfigError(f"instance lease ttl must be >= 1 second, got {ttl}")
        self.service = service
        self.max_id = max_id
        self.ttl = ttl
        self.sticky = sticky
        self.prefix = f"{INSTANCE_ROOT}{service}/"
        self._client = client
        self._keeper = keeper
        self._lock = threading.RLock()  # on_lost may call back at once, inside instance_id
        self._id: int | None = None
        self._lease: KeptLease | None = None
        self._callbacks: list[Callable[[int], None]] = []
        #: allocations so far: tells an InstanceLease whether the ID held now is still the one
        #: it got (a new allocation can give the same number back)
        self._allocations = 0

    def instance_id(self) -> int:
        """This process's ID in [0, max_id], allocated on first call and cached.

        After the lease was lost (see :meth:`on_lost`) or :meth:`release`, the next call
        allocates a new ID. Raises :class:`InstanceIdExhausted` when every ID is taken and
        :class:`CoordUnavailable` when etcd does not answer.
        """
        with self._lock:
            if self._id is not None and self._lease is not None and not self._lease.lost:
                return self._id
            self._id, self._lease = self._allocate()
            self._allocations += 1
            return self._id

    def get_instance_id(self) -> int:
        """Deprecated alias of :meth:`instance_id` (the Go name; removed in 0.2.0)."""
        warn_renamed("Instancer.get_instance_id", "instance_id", "0.2.0")
        return self.instance_id()

    def on_lost(self, callback: Callable[[int], None]) -> None:
        """Call ``callback(id)`` from a background thread when the lease holding the ID is lost;
        the ID must then no longer be used."""
        with self._lock:
            self._callbacks.append(callback)

    def release(self) -> None:
        """Give the ID back now (revokes the lease). Idempotent."""
        with self._lock:
            lease, self._lease, self._id = self._lease, None, None
        if lease is not None:
            lease.revoke()

    @property
    def current_id(self) -> int | None:
        """The ID held right now, without allocating (None if none, released or lost; lost
        from the lease's deadline on, see :mod:`im_infra.coord._internal.lease`)."""
        lease = self._lease
        return self._id if lease is not None and not lease.lost else None

    def _allocate(self) -> tuple[int, KeptLease]:
        lease = self._keeper.grant(self.ttl, purpose="instance_id")
        token = json.dumps(
            {
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "token": uuid.uuid4().hex,
                "since": round(time.time(), 3),
            }
        ).encode()
        try:
            claim = self._claim_sticky if self.sticky else self._claim
            instance_id = claim(lease, token)
        except BaseException:
            lease.revoke()
            raise
        lease.on_lost(lambda _lease: self._lost(instance_id, _lease))
        _log.info("instance id allocated", service_name=self.service, instance_id=instance_id)
        return instance_id, lease

    def _used(self) -> set[int]:
        result = self._client.range(self.prefix, prefix=True, keys_only=True)
        used = set()
        for kv in result.kvs:
            tail = kv.key[len(self.prefix) :]
            if tail.isdigit():
                used.add(int(tail))
        return used

    def _holders(self) -> dict[int, tuple[str, int]]:
        """The IDs held now and the (host, pid) of each holder (("", -1) when unreadable)."""
        result = self._client.range(self.prefix, prefix=True)
        held: dict[int, tuple[str, int]] = {}
        for kv in result.kvs:
            tail = kv.key[len(self.prefix) :]
            if tail.isdigit():
                try:
                    data = json.loads(kv.value)
                    holder = (str(data["host"]), int(data["pid"]))
                except (ValueError, TypeError, KeyError):
                    holder = ("", -1)
                held[int(tail)] = holder
        return held

    def _try(self, lease: KeptLease, token: bytes, candidate: int) -> bool:
        key = f"{self.prefix}{candidate}"
        result = self._client.txn(
            [Compare(key, "create", "==", 0)], [PutOp(key, token, lease.id)], [GetOp(key)]
        )
        if result.succeeded:
            return True
        existing = result.responses[0] if result.responses else None
        return isinstance(existing, list) and bool(existing) and _same(existing[0], token)

    def _claim_sticky(self, lease: KeptLease, token: bytes) -> int:
        """Reclaim an ID a predecessor on this host held (waiting for its lease to expire), else
        take the lowest free one."""
        host, pid = socket.gethostname(), os.getpid()
        held = self._holders()
        # Held on this host by another process: maybe a predecessor whose lease has not expired.
        # (Our own process's IDs are live for sure.)
        mine = {i for i, (h, p) in held.items() if h == host and p != pid}
        deadline = time.monotonic() + self.ttl + 1.0
        if mine:
            _log.info(
                "waiting for an instance id held on this host to be freed",
                service_name=self.service,
                instance_ids=sorted(mine),
                max_wait_s=self.ttl + 1,
            )
        while mine and time.monotonic() < deadline:
            time.sleep(0.25)
            held = self._holders()
            for candidate in sorted(mine - set(held)):
                if self._try(lease, token, candidate):
                    return candidate
            mine &= set(held)
        for _ in range(4):
            for candidate in range(self.max_id + 1):
                if candidate not in held and self._try(lease, token, candidate):
                    return candidate
            held = self._holders()
        free = self.max_id + 1 - len(held)
        if free <= 0:
            raise InstanceIdExhausted(
                f"all {self.max_id + 1} instance ids of service {self.service!r} are held by "
                f"live instances (ids 0..{self.max_id})"
            )
        raise CoordError(
            f"could not claim an instance id for {self.service!r}: too much contention"
        )

    def _claim(self, lease: KeptLease, token: bytes) -> int:
        used = self._used()
        for _ in range(4 * (self.max_id + 1) + 16):
            free = [i for i in range(self.max_id + 1) if i not in used]
            if not free:
                used = self._used()  # re-check once against etcd before giving up
                free = [i for i in range(self.max_id + 1) if i not in used]
                if not free:
                    raise InstanceIdExhausted(
                        f"all {self.max_id + 1} instance ids of service {self.service!r} are "
                        f"held by live instances (ids 0..{self.max_id})"
                    )
            candidate = random.choice(free)
            key = f"{self.prefix}{candidate}"
            result = self._client.txn(
                [Compare(key, "create", "==", 0)],
                [PutOp(key, token, lease.id)],
                [GetOp(key)],
            )
            if result.succeeded:
                return candidate
            existing = result.responses[0] if result.responses else None
            if isinstance(existing, list) and existing and _same(existing[0], token):
                return candidate  # our own put, retried after a timeout
            used.add(candidate)
        raise CoordError(
            f"could not claim an instance id for {self.service!r}: too much contention"
        )

    def _lost(self, instance_id: int, lease: KeptLease) -> None:
        with self._lock:
            if self._lease is lease:
                self._id = None
                self._lease = None
            callbacks = list(self._callbacks)
        _log.error("instance id lost", service_name=self.service, instance_id=instance_id)
        for callback in callbacks:
            try:
                callback(instance_id)
            except Exception:
                _log.exception("instance-id on_lost callback failed", service_name=self.service)

    def close(self) -> None:
        """Same as :meth:`release`."""
        self.release()

    def __enter__(self) -> EtcdInstancer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


_NO_CURRENT_ID = object()


class InstanceLease:
    """An instance ID this process holds, as one object: what a user of the ID (uid's Snowflake
    generator, a Kafka static member) needs to stop using it in time.

    :meth:`hold` gets the ID from any :class:`~im_infra.coord.Instancer`; :attr:`held` says,
    without I/O, whether it is still held (False once released or lost; checked against the
    instancer's ``current_id``, so a lost lease counts from its deadline on, even before the
    callbacks ran, and an ID released behind the holder's back, e.g. by ``provider.close()``,
    counts too); :meth:`on_lost` calls back once when the ID is lost (at once when it already
    is); :meth:`release` gives it back.
    """

    __slots__ = (
        "_allocation",
        "_callbacks",
        "_early",
        "_id",
        "_instancer",
        "_lock",
        "_lost",
        "_released",
    )

    def __init__(self, instancer: Instancer) -> None:
        self._instancer = instancer
        self._lock = threading.Lock()
        self._id: int | None = None
        self._early: set[int] = set()  # losses reported while the ID was being allocated
        self._lost = False
        self._released = False
        self._callbacks: list[Callable[[int], None]] = []
        self._allocation: int | None = None  # the instancer's allocation this lease holds

    @classmethod
    def hold(cls, instancer: Instancer) -> InstanceLease:
        """The lease of ``instancer.instance_id()`` (its errors propagate: CoordError)."""
        lease = cls(instancer)
        instancer.on_lost(lease._instancer_lost)  # before: a loss during allocation counts
        instance_id = instancer.instance_id()
        with lease._lock:
            lease._id = instance_id
            lease._allocation = getattr(instancer, "_allocations", None)
            lease._lost = instance_id in lease._early
        return lease

    @property
    def id(self) -> int:
        """The instance ID."""
        if self._id is None:
            raise RuntimeError("InstanceLease.id before the ID was allocated: use hold()")
        return self._id

    @property
    def held(self) -> bool:
        """Whether the ID is still this process's (no I/O; cheap enough to ask before every
        use of the ID)."""
        if self._lost or self._released or not self._same_allocation():
            return False
        current = getattr(self._instancer, "current_id", _NO_CURRENT_ID)
        return current is _NO_CURRENT_ID or current == self._id

    def _same_allocation(self) -> bool:
        """False once the instancer allocated again (maybe the same number: not this lease's)."""
        mine = self._allocation
        return mine is None or getattr(self._instancer, "_allocations", mine) == mine

    def on_lost(self, callback: Callable[[int], None]) -> None:
        """Call ``callback(id)`` once when the ID's lease is lost (from coord's keepalive
        thread), or now when it already was. A release is not a loss."""
        with self._lock:
            if not self._lost:
                self._callbacks.append(callback)
                return
            instance_id = self._id
        if instance_id is not None:
            callback(instance_id)

    def release(self) -> None:
        """Give the ID back (idempotent; nothing to do once it was lost)."""
        with self._lock:
            if self._released or self._lost:
                return
            self._released = True
        same = getattr(self._instancer, "current_id", self._id) == self._id
        if same and self._same_allocation():  # not a newer ID, even with the same number
            self._instancer.release()

    def _instancer_lost(self, instance_id: int) -> None:
        with self._lock:
            if self._id is None:
                self._early.add(instance_id)
                return
            if instance_id != self._id or self._lost:
                return
            self._lost = True
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback(instance_id)

    def __repr__(self) -> str:
        return f"InstanceLease(id={self._id!r}, held={self.held})"


def _same(kv: KeyValue, token: bytes) -> bool:
    return kv.value == token
