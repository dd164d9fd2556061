"""Static group membership (KIP-345) by default: each consumer's ``group.instance.id``.

With a static id, a member that restarts within ``session.timeout.ms`` takes its partitions back
without a rebalance, and a broker that never evicts a dead member (the local stack's, see
docs/operations.md) lets the restarted process replace it. Where the id comes from, first match:

1. ``rdkafka_config={"group.instance.id": ...}`` (the raw escape hatch);
2. ``consumer.groupInstanceId`` in kafka.yaml or the overrides (e.g. a StatefulSet pod name);
3. derived: ``<service>-<n>``, where ``n`` is a *sticky* instance ID held in coord under the name
   ``<service>.mq.<group>``: unique among the group's live members of the service, and given back
   to a process restarted on the same host (see :mod:`im_infra.coord.instance`; the restarted
   process waits up to the lease TTL, 10 s, for its predecessor's lease to expire).

Without a config center (no ``coord`` and no ``IM_INFRA_ETCD_ENDPOINTS`` for coord's default
provider), or when it does not answer, the member joins dynamically and a warning says so.
``consumer.staticMembership: false`` turns all of this off.
"""

from __future__ import annotations

import re

from im_infra import clog
from im_infra import coord as _coord

__all__ = ["StaticMember", "claim_static_member", "member_namespace"]

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def member_namespace(service_name: str, group_id: str) -> str:
    """The coord instance-ID namespace of ``service_name``'s members of ``group_id``."""
    return f"{service_name}.mq.{_UNSAFE.sub('_', group_id)}"


class StaticMember:
    """A derived ``group.instance.id`` and the coord instance ID that keeps it unique."""

    def __init__(self, instance_id: str, instancer: _coord.Instancer) -> None:
        self.instance_id = instance_id
        self._instancer = instancer

    def release(self) -> None:
        """Give the instance ID back (after the consumer left the group). Idempotent."""
        self._instancer.release()


def claim_static_member(
    service_name: str,
    group_id: str,
    coord: _coord.Provider | None,
    log: clog.Logger,
) -> StaticMember | None:
    """Derive a ``group.instance.id`` from coord; ``None`` (dynamic membership) without one."""
    provider = coord if coord is not None else _coord.default_provider()
    if provider is None:
        log.warning(
            "no config center: the consumer joins without static membership "
            "(set consumer.groupInstanceId, or IM_INFRA_ETCD_ENDPOINTS)",
            group_id=group_id,
        )
        return None
    namespace = member_namespace(service_name, group_id)
    try:
        instancer = provider.new_instancer(namespace, sticky=True)
        number = instancer.instance_id()
    except _coord.CoordError as exc:
        log.warning(
            "could not hold a static member id in coord: the consumer joins without static "
            "membership",
            group_id=group_id,
            cause=str(exc),
        )
        return None
    member_id = f"{service_name}-{number}"

    def lost(_number: int) -> None:
        log.error(
            "the coord instance id behind this consumer's group.instance.id was lost; another "
            "process may take the same id and the broker would then fence one of them",
            group_id=group_id,
            group_instance_id=member_id,
        )

    instancer.on_lost(lost)
    log.info("static membership", group_id=group_id, group_instance_id=member_id)
    return StaticMember(member_id, instancer)
