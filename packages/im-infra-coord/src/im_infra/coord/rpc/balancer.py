"""Balancers: which registered instance takes the next call (pure logic, no I/O).

A balancer sees the instances left after the metadata filters (``update``, on every registry
change) and, per call, picks one among the *candidates*: the instances whose connection is
usable, minus the ones a retried call already tried. Three are built in:

- :class:`RoundRobin` (``"round_robin"``): the candidates in turn.
- :class:`PowerOfTwoChoices` (``"p2c"``): two random candidates, the one with fewer calls in
  flight (go-zero's zrpc and kratos pick the same way; they weigh latency in too).
- :class:`ConsistentHash` (``"consistent_hash"``): a hash ring with virtual nodes keyed by the
  request key (:func:`route_key` or the ``x-route-key`` metadata), so one user's calls stick to
  one instance while it lives and removing an instance moves only the keys it owned. A call
  without a key goes round robin.
"""

from __future__ import annotations

import bisect
import contextlib
import contextvars
import hashlib
import itertools
import random
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

from im_infra.coord.errors import ConfigError

__all__ = [
    "ROUTE_KEY_METADATA",
    "Balancer",
    "ConsistentHash",
    "Node",
    "PowerOfTwoChoices",
    "RoundRobin",
    "current_route_key",
    "make_balancer",
    "route_key",
]

#: The metadata key a caller may set instead of :func:`route_key` (sent to the server as is).
ROUTE_KEY_METADATA = "x-route-key"

_ROUTE_KEY: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "im_infra_coord_route_key", default=None
)


@contextlib.contextmanager
def route_key(key: str | int) -> Iterator[str]:
    """Route the calls made inside the ``with`` block by ``key`` (a user id, say) under the
    consistent-hash balancer. Follows the current context like the clog trace id."""
    text = str(key)
    if not text:
        raise ConfigError("route key must be non-empty")
    token = _ROUTE_KEY.set(text)
    try:
        yield text
    finally:
        _ROUTE_KEY.reset(token)


def current_route_key() -> str | None:
    """The key bound by :func:`route_key`, or None."""
    return _ROUTE_KEY.get()


class Node(Protocol):
    """What a balancer sees of one instance."""

    @property
    def id(self) -> str: ...

    @property
    def inflight(self) -> int: ...


class Balancer(Protocol):
    """Picks an instance per call. ``pick`` is called under the channel's lock."""

    def update(self, nodes: Sequence[Node]) -> None:
        """The instances after filtering (sorted by id), after every registry change."""
        ...

    def pick(self, candidates: Sequence[Node], key: str | None) -> Node:
        """One of ``candidates`` (never empty; a subset of the last ``update``)."""
        ...


class RoundRobin:
    """The candidates in turn."""

    def __init__(self) -> None:
        self._next = itertools.count()

    def update(self, nodes: Sequence[Node]) -> None:
        return None

    def pick(self, candidates: Sequence[Node], key: str | None) -> Node:
        return candidates[next(self._next) % len(candidates)]


class PowerOfTwoChoices:
    """Two distinct random candidates; the one with fewer calls in flight (ties: the first)."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    def update(self, nodes: Sequence[Node]) -> None:
        return None

    def pick(self, candidates: Sequence[Node], key: str | None) -> Node:
        n = len(candidates)
        if n == 1:
            return candidates[0]
        i = int(self._rng.random() * n)
        j = int(self._rng.random() * (n - 1))
        if j >= i:
            j += 1
        a, b = candidates[i], candidates[j]
        return b if b.inflight < a.inflight else a


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


class ConsistentHash:
    """A hash ring of ``replicas`` virtual nodes per instance, keyed by instance id.

    A key maps to the first ring point at or after its hash whose instance is a candidate, so
    an instance that is down or already tried hands its keys to the next instance on the ring
    and gets them back when it returns; the other instances' keys do not move.
    """

    def __init__(self, replicas: int = 160) -> None:
        if replicas < 1:
            raise ConfigError(f"consistent hash replicas must be >= 1, got {replicas}")
        self._replicas = replicas
        self._points: list[int] = []
        self._owners: list[str] = []
        self._ids: frozenset[str] = frozenset()
        self._fallback = RoundRobin()

    def update(self, nodes: Sequence[Node]) -> None:
        ids = frozenset(n.id for n in nodes)
        if ids == self._ids:
            return
        ring = sorted(
            (_hash(f"{node_id}#{r}"), node_id) for node_id in ids for r in range(self._replicas)
        )
        self._points = [p for p, _ in ring]
        self._owners = [o for _, o in ring]
        self._ids = ids

    def owner(self, key: str, eligible: frozenset[str] | None = None) -> str | None:
        """The instance id owning ``key`` among ``eligible`` (default: all), or None."""
        if not self._points:
            return None
        start = bisect.bisect_left(self._points, _hash(key))
        size = len(self._points)
        for step in range(size):
            owner = self._owners[(start + step) % size]
            if eligible is None or owner in eligible:
                return owner
        return None

    def pick(self, candidates: Sequence[Node], key: str | None) -> Node:
        if key is None:
            return self._fallback.pick(candidates, None)
        by_id = {c.id: c for c in candidates}
        eligible = None if len(by_id) == len(self._ids) else frozenset(by_id)
        owner = self.owner(key, eligible)
        node = by_id.get(owner) if owner is not None else None
        return node if node is not None else self._fallback.pick(candidates, key)


_BUILTIN: dict[str, Callable[[], Balancer]] = {
    "round_robin": RoundRobin,
    "p2c": PowerOfTwoChoices,
    "consistent_hash": ConsistentHash,
}


def make_balancer(balancer: str | Balancer) -> Balancer:
    """A balancer from its name (``round_robin``, ``p2c``, ``consistent_hash``) or as given."""
    if isinstance(balancer, str):
        factory = _BUILTIN.get(balancer)
        if factory is None:
            raise ConfigError(
                f"unknown balancer {balancer!r}: expected one of {', '.join(sorted(_BUILTIN))}"
                " or an object with update() and pick()"
            )
        return factory()
    if not (
        callable(getattr(balancer, "pick", None)) and callable(getattr(balancer, "update", None))
    ):
        raise ConfigError(f"balancer {balancer!r} has no pick()/update() methods")
    return balancer
