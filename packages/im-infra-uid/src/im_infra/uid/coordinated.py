"""``from_coord``: a Snowflake generator whose worker ID is allocated and held by coord."""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable
from typing import Protocol

from im_infra import clog
from im_infra.uid.errors import InvalidArgument, WorkerIdUnavailable
from im_infra.uid.generator import Clock, Sleep, SnowflakeGenerator
from im_infra.uid.layout import DEFAULT_EPOCH_MS, MAX_WORKER_ID

__all__ = ["InstancerLike", "ProviderLike", "from_coord"]

_log = clog.get_logger("uid")


class InstancerLike(Protocol):
    """What ``from_coord`` needs from ``coord.Instancer``."""

    def get_instance_id(self) -> int: ...
    def on_lost(self, callback: Callable[[int], None]) -> None: ...
    def release(self) -> None: ...


class ProviderLike(Protocol):
    """What ``from_coord`` needs from ``coord.Provider``."""

    def instance_for(self, service: str, *, max_id: int = ...) -> InstancerLike: ...


class _LossLatch:
    """Forwards coord's on_lost callback to the generator, even if it fires before the
    generator exists (the callback is registered before the ID is requested)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lost: int | None = None
        self._generator: weakref.ref[SnowflakeGenerator] | None = None

    def trigger(self, instance_id: int) -> None:
        with self._lock:
            self._lost = instance_id
            ref = self._generator
        generator = ref() if ref is not None else None
        if generator is not None:
            generator._worker_id_lost(instance_id)

    def attach(self, generator: SnowflakeGenerator) -> None:
        with self._lock:
            self._generator = weakref.ref(generator)
            lost = self._lost
        if lost is not None:
            generator._worker_id_lost(lost)


def from_coord(
    service: str | ProviderLike | None = None,
    legacy_service: str | None = None,
    *,
    coord: ProviderLike | None = None,
    epoch_ms: int = DEFAULT_EPOCH_MS,
    clock: Clock = time.time_ns,
    sleep: Sleep = time.sleep,
    max_backward_ms: int = 5,
    release_on_close: bool = False,
) -> SnowflakeGenerator:
    """A generator whose worker ID is ``coord.instance_for(service).get_instance_id()``.

    ``from_coord("im-logic")`` is enough (``from_coord(coord=p)`` takes the name ``p`` was
    connected with) when ``$IM_INFRA_ETCD_ENDPOINTS`` is set: the process's
    default provider (:func:`im_infra.coord.default_provider`) serves. ``coord=`` passes a
    provider explicitly; the older positional form ``from_coord(provider, "im-logic")`` works too.

    coord allocates the ID (0..1023) under a lease it keeps alive, so no two live processes of
    ``service`` share it. If coord reports the lease lost, the generator stops: every later call
    raises :class:`WorkerIdLost` instead of risking a duplicate. A coord failure while getting
    the ID raises :class:`WorkerIdUnavailable` with the coord error chained.

    The ID stays held by the provider's Instancer (other code of the service may use the same
    instance ID); with ``release_on_close=True``, :meth:`SnowflakeGenerator.close` also
    releases it. Where the Instancer exposes ``current_id`` (coord's ``EtcdInstancer`` does),
    the generator also checks it at every new millisecond, so an ID released behind its back
    (``instancer.release()``, ``provider.close()``) stops it too. The other keyword arguments
    are those of :func:`new_generator`.
    """
    from im_infra import coord as _coord  # coord imports its etcd client: import lazily
    from im_infra.coord.errors import CoordError

    provider: ProviderLike | None = coord
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
    latch = _LossLatch()
    try:
        instancer = provider.instance_for(service, max_id=MAX_WORKER_ID)
        instancer.on_lost(latch.trigger)
        worker = instancer.get_instance_id()
    except CoordError as exc:
        raise WorkerIdUnavailable(
            f"could not get a worker ID for service {service!r} from coord: {exc}"
        ) from exc
    generator = SnowflakeGenerator(
        worker,
        epoch_ms=epoch_ms,
        clock=clock,
        sleep=sleep,
        max_backward_ms=max_backward_ms,
        on_close=instancer.release if release_on_close else None,
    )
    if hasattr(type(instancer), "current_id"):  # coord.EtcdInstancer: None once released/lost
        generator._still_held = lambda: getattr(instancer, "current_id", None) == worker
    latch.attach(generator)
    _log.info(
        "uid generator started with a worker ID from coord",
        coord_service=service,
        worker=worker,
    )
    return generator
