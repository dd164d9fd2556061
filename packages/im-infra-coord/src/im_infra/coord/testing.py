"""Testing helpers for services that use coord: an in-memory etcd.

:class:`MemoryEtcd` is an etcd v3 key-value store held in memory (revisions, leases that expire
when not kept alive, watches, transactions, compaction). :meth:`MemoryEtcd.connect` returns the
same :class:`~im_infra.coord.EtcdProvider` as :func:`~im_infra.coord.connect`, running the real
registry, config center, locks and instance IDs over it, so it goes wherever a provider is
accepted (``mq.new_producer(..., coord=p)``, ``cache.new(..., coord=p)``, ``uid.from_coord(p)``)
and behaves like etcd (the contract tests in ``packages/im-infra-coord/tests/integration`` run the
same tests
against both). Connect several providers to one ``MemoryEtcd`` to play several processes::

    from im_infra import coord
    from im_infra.coord.testing import MemoryEtcd

    etcd = MemoryEtcd()
    with etcd.connect(service="im-logic") as p:
        p.config.set("global/kafka.yaml", {"brokers": "k:9092"})
        assert p.config.get_document("global/kafka.yaml") == {"brokers": "k:9092"}
        with p.lock.acquire("job", ttl=5, timeout=1):
            assert p.lock.try_acquire("job") is None
        assert 0 <= p.instance.instance_id() <= 1023

Faults: :meth:`MemoryEtcd.set_available` (every call raises
:class:`~im_infra.coord.CoordUnavailable`, watches break and resume when it is back) and
:meth:`MemoryEtcd.expire_leases` (every lease is gone, as after a long partition: held locks
and instance IDs are reported lost).
"""

from __future__ import annotations

from im_infra.coord._internal.documents import resolve_env
from im_infra.coord._internal.memory import MemoryClient, MemoryStore
from im_infra.coord.errors import ConfigError
from im_infra.coord.instance import DEFAULT_MAX_ID
from im_infra.coord.protocols import Provider
from im_infra.coord.provider import SERVICE_VAR, EtcdProvider

__all__ = ["MemoryEtcd", "memory_provider"]


class MemoryEtcd:
    """An in-memory etcd shared by the providers :meth:`connect` returns. Thread-safe."""

    def __init__(self) -> None:
        self._store = MemoryStore()

    def connect(
        self,
        *,
        service: str | None = None,
        env: str | None = None,
        timeout: float = 5.0,
        max_id: int = DEFAULT_MAX_ID,
    ) -> EtcdProvider:
        """A provider on this store, like :func:`im_infra.coord.connect` (``service`` and ``env``
        mean the same; nothing is read from ``$IM_INFRA_ETCD_*``)."""
        if service is not None and (not isinstance(service, str) or not service):
            raise ConfigError(
                f"service must be a non-empty str (or {SERVICE_VAR} unset), got {service!r}"
            )
        return EtcdProvider(
            MemoryClient(self._store, timeout=timeout),
            service=service,
            env=resolve_env(env),
            max_id=max_id,
        )

    @property
    def available(self) -> bool:
        """False while :meth:`set_available` made the store unreachable."""
        return self._store.available

    def set_available(self, available: bool) -> None:
        """Make the store unreachable (every call raises CoordUnavailable and open watches
        break) or reachable again (watches resume from where they were, missing nothing)."""
        self._store.set_available(available)

    def expire_leases(self) -> int:
        """Expire every lease now, deleting its keys (registrations, locks, instance IDs), as
        etcd does when keepalives stop for a TTL; returns how many leases there were."""
        return self._store.expire_leases()


def memory_provider(*, service: str | None = None, env: str | None = None) -> EtcdProvider:
    """A provider on a fresh, private :class:`MemoryEtcd`."""
    return MemoryEtcd().connect(service=service, env=env)


def _conforms(p: EtcdProvider) -> Provider:
    """mypy proves here that the provider returned above satisfies coord's Protocol."""
    return p
