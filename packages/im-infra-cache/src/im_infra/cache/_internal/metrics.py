"""The cache component's OpenTelemetry instruments (API only: no-ops until an SDK is installed).

Created once at import through ``opentelemetry.metrics``' proxy meter, so an SDK installed later
(in any order) receives them. The one attribute of an operation is its Redis command name in
lower case (``get``, ``set``, ``evalsha``, ``pipeline`` for a whole pipeline): never keys or
values.

The hot path makes no call into OpenTelemetry for most operations: the operation count is kept
here, in a plain integer per command, and reported through an observable counter when a reader
collects. The duration histogram is *sampled*: at most one recording per command every
:data:`DURATION_SAMPLE_INTERVAL_S` (1 ms), because one SDK ``record`` costs 5-10 µs here, 10-20 %
of a local GET; the sampled durations describe the latency distribution, and the exact counts
come from ``im_infra.cache.operations``. Errors (the rare path) are always recorded.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from time import perf_counter
from typing import TypeVar

from opentelemetry.metrics import CallbackOptions, Observation

from im_infra.clog import telemetry

__all__ = ["errors", "failed", "observe", "operation_duration", "operations"]

COMMAND = "command"
ERROR_TYPE = "error.type"
E = TypeVar("E", bound=Exception)
DURATION_SAMPLE_INTERVAL_S = 0.001
"""At most one duration recording per command per this many seconds (0: record every one)."""
PIPELINE = "pipeline"
"""The command name of one pipeline/transaction ``execute()`` (all its queued commands)."""


meter = telemetry.meter("cache")

operation_duration = meter.create_histogram(
    "im_infra.cache.operation.duration",
    unit="s",
    description="Duration of Redis operations as seen by the caller, by command.",
    explicit_bucket_boundaries_advisory=[
        0.0001,
        0.00025,
        0.0005,
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
    ],
)
errors = meter.create_counter(
    "im_infra.cache.errors",
    unit="{error}",
    description="Redis operations that failed, by command and CacheError subclass.",
)


class _Command:
    """One command's pre-bound attributes and operation count."""

    __slots__ = ("attrs", "calls", "next_sample")

    def __init__(self, name: str) -> None:
        self.attrs: Mapping[str, str] = {COMMAND: name}
        self.calls = 0
        self.next_sample = 0.0


_commands: dict[object, _Command] = {}
_lock = threading.Lock()  # guards the counts (``+=`` is not atomic across threads)


def _command(raw: object) -> _Command:
    """The _Command of ``raw`` (``"GET"``, ``b"GET"``, ``"SCRIPT LOAD"``), made on first use."""
    found = _commands.get(raw)
    if found is not None:
        return found
    name = (raw.decode() if isinstance(raw, bytes) else str(raw)).lower()
    with _lock:
        return _commands.setdefault(raw, _Command(name))


_record = operation_duration.record


def observe(raw: object, started: float) -> None:
    """One operation of command ``raw`` that started at ``perf_counter()`` ``started`` ended
    (successfully, or with an error the caller does not see)."""
    now = perf_counter()
    command = _commands.get(raw) or _command(raw)
    with _lock:
        command.calls += 1
    if now >= command.next_sample:  # a benign race: two threads may both record
        command.next_sample = now + DURATION_SAMPLE_INTERVAL_S
        _record(now - started, command.attrs)


def failed(error: E, raw: object, started: float) -> E:
    """One operation of command ``raw`` ended with ``error`` (a CacheError; returned, for
    ``raise``)."""
    elapsed = perf_counter() - started
    command = _command(raw)
    with _lock:
        command.calls += 1
    labelled = {**command.attrs, ERROR_TYPE: type(error).__name__}
    _record(elapsed, labelled)
    errors.add(1, labelled)
    return error


def _observe_operations(_options: CallbackOptions) -> Iterable[Observation]:
    with _lock:
        counts = [(c.attrs[COMMAND], c.calls) for c in _commands.values()]
    totals: dict[str, int] = {}
    for name, calls in counts:
        totals[name] = totals.get(name, 0) + calls
    for name, calls in totals.items():
        yield Observation(calls, {COMMAND: name})


operations = meter.create_observable_counter(
    "im_infra.cache.operations",
    callbacks=[_observe_operations],
    unit="{operation}",
    description="Redis operations (successful or not), by command.",
)
