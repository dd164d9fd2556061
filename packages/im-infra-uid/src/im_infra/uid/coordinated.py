"""``from_coord``: a Snowflake generator whose worker ID is allocated and held by coord."""

from __future__ import annotations

import time
import warnings
from typing import TYPE_CHECKING, Any

from im_infra import clog
from im_infra.uid.errors import InvalidArgument, WorkerIdUnavailable
from im_infra.uid.generator import Clock, Sleep, SnowflakeGenerator
from im_infra.uid.layout import DEFAULT_EPOCH_MS, MAX_WORKER_ID

if TYPE_CHECKING:  # coord imports its etcd client: imported when from_coord() runs
    from im_infra.coord import Provider

__all__ = ["from_coord"]

_log = clog.get_logger("uid")


def __getattr__(name: str) -> Any:
    """``InstancerLike`` and ``ProviderLike`` (deprecated): coord's own Protocols."""
    replacement = _DEPRECATED.get(name)
    if replacement is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(
        f"im_infra.uid.{name} is deprecated (removed in 0.3): use im_infra.coord.{replacement}",
        DeprecationWarning,
        stacklevel=2,
    )
    from im_infra import coord

    return getattr(coord, replacement)


_DEPRECATED = {"InstancerLike": "Instancer", "ProviderLike": "Provider"}


def from_coord(
    service: str | Provider | None = None,
    legacy_service: str | None = None,
    *,
    coord: Provider | None = None,
    epoch_ms: int = DEFAULT_EPOCH_MS,
    clock: Clock = time.time_ns,
    sleep: Sleep = time.sleep,
    max_backward_ms: int = 5,
    release_on_close: bool = False,
) -> SnowflakeGenerator:
    """A generator whose worker ID is ``coord.instance_for(service).instance_id()``.

    ``from_coord("im-logic")`` is enough (``from_coord(coord=p)`` takes the name ``p`` was
    connected with) when ``$IM_INFRA_ETCD_ENDPOINTS`` is set: the process's
    default provider (:func:`im_infra.coord.default_provider`) serves. ``coord=`` passes a
    provider explicitly; the older positional form ``from_coord(provider, "im-logic")`` works too.

    coord allocates the ID (0..1023) under a lease it keeps alive, so no two live processes of
    ``service`` share it. If coord reports the lease lost, the generator stops: every later call
    raises :class:`WorkerIdLost` instead of risking a duplicate. A coord failure while getting
    the ID raises :class:`WorkerIdUnavailable` with the coord error chained.

    The ID is held as an :class:`im_infra.coord.InstanceLease` of the provider's Instancer
    (other code of the service may use the same instance ID); with ``release_on_close=True``,
    :meth:`SnowflakeGenerator.close` also releases it. The generator asks the lease at every
    new millisecond whether the ID is still held, so an ID released behind its back
    (``instancer.release()``, ``provider.close()``) stops it too. The other keyword arguments
    are those of :func:`new_generator`.
    """
    from im_infra import coord as _coord  # coord imports its etcd client: import lazily
    from im_infra.coord.errors import CoordError

    provider: Provider | None = coord
    if service is not None and not isinstance(service, str):  # from_coord(provider, service)
        if provider is not None:
            raise InvalidArgument("pass the provider once: from_coord(service, coord=provider)")
        provider, service = service, legacy_service
    elif legacy_service is not None:
        raise InvalidArgument(f"unexpected second positional argument {legacy_service!r}")
    if provider is None:
        provider = _coord.default_provider()
    if service is None and provider is not None:  # the name the provider was connected with
        named = getattr(provider, "service", None)
        service = named if isinstance(named, str) else None
    if not isinstance(service, str) or not service:
        raise InvalidArgument(
            f"service must be a non-empty str, got {service!r} (pass it, or a provider "
            "connected with service=...)"
        )
    if provider is None:
        raise WorkerIdUnavailable(
            f"no coord provider for service {service!r}: set {_coord.provider.ENDPOINTS_VAR} "
            "(the process's default provider) or pass coord=..."
        )
    try:
        lease = _coord.InstanceLease.hold(provider.instance_for(service, max_id=MAX_WORKER_ID))
    except CoordError as exc:
        raise WorkerIdUnavailable(
            f"could not get a worker ID for service {service!r} from coord: {exc}"
        ) from exc
    worker = lease.id
    generator = SnowflakeGenerator(
        worker,
        epoch_ms=epoch_ms,
        clock=clock,
        sleep=sleep,
        max_backward_ms=max_backward_ms,
        on_close=lease.release if release_on_close else None,
        lease=lease,
    )
    _log.info(
        "uid generator started with a worker ID from coord",
        coord_service=service,
        worker=worker,
    )
    return generator
