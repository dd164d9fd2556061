"""uid's OpenTelemetry instruments (API only: no-ops until the application installs an SDK).

``im_infra.uid.ids.issued`` costs nothing on the hot path: a generator does not count IDs one
by one, it derives the total from the state it keeps anyway (see
:meth:`SnowflakeGenerator._issued_total`), and this module's observable-counter callback reads
that total from every live generator when the SDK collects. A generator that is garbage
collected hands its final total over to ``_retired`` first, so the counter never goes down.
"""

from __future__ import annotations

import itertools
import os
import threading
import weakref
from collections.abc import Iterable
from typing import Protocol

from opentelemetry.metrics import CallbackOptions, Observation

from im_infra.clog import telemetry

__all__ = ["CLOCK_BACKWARD_WAITS", "IDS_ISSUED", "retire", "track"]


class Counted(Protocol):
    """What the issued-IDs callback needs from a generator."""

    def _issued_total(self) -> int: ...


# serial -> generator. Weak references, so that tracking never keeps a generator alive; keyed by
# a serial (not the WeakSet's weakref) so that retire() still finds a generator whose weakref
# the cyclic garbage collector cleared before calling its __del__.
_live: dict[int, weakref.ref[Counted]] = {}
_serials = itertools.count()
_retired = 0  # IDs issued by generators that no longer exist
_lock = threading.RLock()  # re-entrant: a __del__ may run inside the callback (GC)


def track(generator: Counted) -> int:
    """Include ``generator``'s issued IDs in ``im_infra.uid.ids.issued`` while it lives; returns
    the serial to pass to :func:`retire`."""
    serial = next(_serials)
    with _lock:
        _live[serial] = weakref.ref(generator)
    return serial


def retire(serial: int, issued: int) -> None:
    """A generator is going away having issued ``issued`` IDs: keep them in the total."""
    global _retired
    with _lock:
        if _live.pop(serial, None) is not None:
            _retired += issued


def _observe_issued(_options: CallbackOptions) -> Iterable[Observation]:
    with _lock:
        total = _retired
        for ref in list(_live.values()):
            generator = ref()
            if generator is not None:
                total += generator._issued_total()
    return [Observation(total)]


def _after_fork_in_child() -> None:
    # The child counts its own IDs; its generators reset theirs (see forking.py).
    global _lock, _retired
    _lock = threading.RLock()
    _retired = 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

_meter = telemetry.meter("uid")

IDS_ISSUED = _meter.create_observable_counter(
    "im_infra.uid.ids.issued",
    callbacks=[_observe_issued],
    unit="{id}",
    description="Snowflake IDs issued by this process's generators (next_id and next_ids)",
)
CLOCK_BACKWARD_WAITS = _meter.create_counter(
    "im_infra.uid.clock.backward.waits",
    unit="{wait}",
    description="Times a generator waited for the clock to catch up after it moved backwards "
    "(within max_backward_ms; a larger step raises ClockMovedBackwards instead)",
)
