"""coord's OpenTelemetry instruments (API only: no-ops until the application installs an SDK).

Every instrument is created here, once, at import; the rest of the package calls the small
functions below at the instrumented points. Attribute sets are pre-built (low cardinality:
a lease's purpose, a watch's kind, a lock outcome, a component name).
"""

from __future__ import annotations

from typing import Literal

from opentelemetry.util.types import Attributes

from im_infra.clog import telemetry

LeasePurpose = Literal["registration", "lock", "instance_id", "other"]
LockOutcome = Literal["acquired", "busy", "timeout", "lost", "error"]
ReloadOutcome = Literal["applied", "rejected"]

PURPOSE_ATTR = "im_infra.coord.lease.purpose"
WATCH_KIND_ATTR = "im_infra.coord.watch.kind"
COMPONENT_ATTR = "im_infra.coord.component"
OUTCOME_ATTR = "outcome"

_meter = telemetry.meter("coord")

REGISTRATIONS = _meter.create_counter(
    "im_infra.coord.registrations",
    unit="{registration}",
    description="Service instances registered (registry.register calls that succeeded)",
)
DEREGISTRATIONS = _meter.create_counter(
    "im_infra.coord.deregistrations",
    unit="{registration}",
    description="Service instances deregistered (deregister, or the registry/provider closing)",
)
REREGISTRATIONS = _meter.create_counter(
    "im_infra.coord.reregistrations",
    unit="{registration}",
    description="Registrations re-created automatically after their lease was lost",
)
LEASE_LOSSES = _meter.create_counter(
    "im_infra.coord.lease.losses",
    unit="{lease}",
    description="Leases declared lost (expired, or no keepalive succeeded in 2/3 of the TTL)",
)
WATCH_RECONNECTS = _meter.create_counter(
    "im_infra.coord.watch.reconnects",
    unit="{reconnect}",
    description="Watch streams re-established after a break (etcd down, member change, "
    "network cut, compaction)",
)
LOCK_WAIT = _meter.create_histogram(
    "im_infra.coord.lock.wait.duration",
    unit="s",
    description="Time from a lock request to its outcome (acquired, busy, timeout, lost, error)",
    # an uncontended acquisition takes ~2 ms; a contended one up to the holder's critical section
    explicit_bucket_boundaries_advisory=[
        0.001,
        0.0025,
        0.005,
        0.01,
        0.025,
        0.05,
        0.1,
        0.25,
        0.5,
        1.0,
        2.5,
        5.0,
        10.0,
        30.0,
        60.0,
    ],
)
CONFIG_RELOADS = _meter.create_counter(
    "im_infra.coord.config.reloads",
    unit="{reload}",
    description="Live component config updates from etcd: applied (value changed) or rejected "
    "(invalid, the last good value stays)",
)

_PURPOSES: dict[str, Attributes] = {
    p: {PURPOSE_ATTR: p} for p in ("registration", "lock", "instance_id", "other")
}
_LOCK_OUTCOMES: dict[str, Attributes] = {
    o: {OUTCOME_ATTR: o} for o in ("acquired", "busy", "timeout", "lost", "error")
}
_WATCH_KINDS: dict[str, Attributes] = {}


def registered() -> None:
    REGISTRATIONS.add(1)


def deregistered() -> None:
    DEREGISTRATIONS.add(1)


def reregistered() -> None:
    REREGISTRATIONS.add(1)


def lease_lost(purpose: str) -> None:
    LEASE_LOSSES.add(1, _PURPOSES.get(purpose, _PURPOSES["other"]))


def watch_reconnected(kind: str) -> None:
    attrs = _WATCH_KINDS.get(kind)
    if attrs is None:  # a handful of kinds: services, config, component
        attrs = _WATCH_KINDS.setdefault(kind, {WATCH_KIND_ATTR: kind})
    WATCH_RECONNECTS.add(1, attrs)


def lock_waited(seconds: float, outcome: LockOutcome) -> None:
    LOCK_WAIT.record(seconds, _LOCK_OUTCOMES[outcome])


def config_reloaded(component: str, outcome: ReloadOutcome) -> None:
    CONFIG_RELOADS.add(1, {COMPONENT_ATTR: component, OUTCOME_ATTR: outcome})
