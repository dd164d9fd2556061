"""Snowflake generation: :class:`Generator` (the seed's interface), :class:`SnowflakeGenerator`.

Hot path
--------
``next_id()`` takes the lock, reads the clock once and, while the millisecond has not changed
and its 4,096 sequence numbers are not used up, hands out ``self._next`` and increments it. The
ID is kept fully composed (timestamp, worker and sequence already shifted into place), so the
common case is one comparison of the millisecond, one of the ID against the millisecond's last
ID, and one addition. Everything else (a new millisecond, an exhausted sequence, a clock that
went backwards, a closed/forked/lost generator) goes through :meth:`SnowflakeGenerator._refill`.

``next_ids(n)`` computes whole runs: for each millisecond it takes ``range(next, min(last + 1,
next + remaining))`` at once, so it reads the clock once per millisecond, not once per ID. Within
one call it moves to the *next* millisecond (never past the clock), so milliseconds that went by
while the thread was descheduled are still used: on a busy machine the batch rate stays close
to the Snowflake limit, and every ID's timestamp lies between the call's start and its return.

Invalidating a generator (close, fork, coord losing the worker ID) never needs the lock: it
sets ``_dead`` and then makes the current millisecond look exhausted (``_max = -1``), which
sends the next call to the slow path, where ``_dead`` is checked. ``_start_ms`` re-checks
``_dead`` after installing a new millisecond, so an invalidation that races with it still wins.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from im_infra import clog
from im_infra.clog.lifecycle import Closing
from im_infra.uid._internal import forking
from im_infra.uid._internal import metrics as _metrics
from im_infra.uid.errors import (
    ClockMovedBackwards,
    GeneratorClosed,
    GeneratorForked,
    InvalidArgument,
    TimestampOutOfRange,
    UIDError,
    WorkerIdLost,
)
from im_infra.uid.layout import (
    DEFAULT_EPOCH_MS,
    MAX_SEQUENCE,
    MAX_TIMESTAMP_MS,
    TIMESTAMP_SHIFT,
    WORKER_SHIFT,
    ParsedID,
    check_epoch_ms,
    check_worker_id,
    is_plain_int,
    parse,
)

if TYPE_CHECKING:  # coord imports its etcd client: not imported for new_generator() users
    from im_infra.coord import InstanceLease

__all__ = ["Clock", "Generator", "Sleep", "SnowflakeGenerator", "new_generator"]

#: A clock: returns the current time as integer nanoseconds since the Unix epoch (``time.time_ns``).
Clock = Callable[[], int]
#: A sleep function taking seconds (``time.sleep``).
Sleep = Callable[[float], None]

_NS_PER_MS = 1_000_000
_log = clog.get_logger("uid")


@runtime_checkable
class Generator(Protocol):
    """A unique ID generator (the seed's ``Generator`` interface)."""

    def next_id(self) -> int:
        """Return a new ID, larger than every ID this generator returned before."""
        ...


class SnowflakeGenerator(Closing):
    """Thread-safe Snowflake generator for one worker ID. Create it with :func:`new_generator`
    or :func:`im_infra.uid.from_coord`.

    Guarantees: IDs are unique and strictly increasing for the lifetime of the object, across
    threads; the clock going back by at most ``max_backward_ms`` is waited out, further raises
    :class:`ClockMovedBackwards`; the 4,096 IDs of a millisecond being used up waits for the next
    millisecond; a forked child gets :class:`GeneratorForked` instead of IDs its parent may also
    issue; after :meth:`close` calls raise :class:`GeneratorClosed`.

    ``lease`` (an :class:`im_infra.coord.InstanceLease` of ``worker_id``; ``from_coord`` passes
    one): once it is lost or released, calls raise :class:`WorkerIdLost`. ``on_close`` is called
    by the first :meth:`close`.
    """

    __slots__ = (
        "__weakref__",
        "_backward_logged",
        "_base",
        "_clock",
        "_close_lock",
        "_dead",
        "_epoch",
        "_issued",
        "_lease",
        "_lock",
        "_max",
        "_max_backward",
        "_metrics_serial",
        "_ms",
        "_next",
        "_on_close",
        "_pid",
        "_sleep",
        "_ver",
        "_worker",
        "_worker_bits",
    )

    def __init__(
        self,
        worker_id: int,
        *,
        epoch_ms: int = DEFAULT_EPOCH_MS,
        clock: Clock = time.time_ns,
        sleep: Sleep = time.sleep,
        max_backward_ms: int = 5,
        on_close: Callable[[], None] | None = None,
        lease: InstanceLease | None = None,
    ) -> None:
        self._worker = check_worker_id(worker_id)
        if lease is not None and lease.id != worker_id:
            raise InvalidArgument(f"lease holds instance ID {lease.id}, not worker ID {worker_id}")
        self._epoch = check_epoch_ms(epoch_ms)
        if not is_plain_int(max_backward_ms) or max_backward_ms < 0:
            raise InvalidArgument(
                "max_backward_ms must be a non-negative int (milliseconds), "
                f"got {max_backward_ms!r}"
            )
        if not callable(clock) or not callable(sleep):
            raise InvalidArgument("clock and sleep must be callables")
        sample = clock()
        if not is_plain_int(sample):
            raise InvalidArgument(
                "clock must return the time as int nanoseconds since the Unix epoch "
                f"(like time.time_ns), it returned {type(sample).__name__} {sample!r}"
            )
        self._max_backward = max_backward_ms
        self._clock = clock
        self._sleep = sleep
        self._on_close = on_close
        # The worker ID's lease in coord: asked once per new millisecond whether it is held.
        self._lease = lease
        self._worker_bits = worker_id << WORKER_SHIFT
        self._lock = threading.Lock()
        self._close_lock = threading.Lock()  # close() only; never taken on the hot path
        self._pid = os.getpid()
        self._dead: tuple[type[UIDError], str] | None = None
        self._backward_logged = -1  # the last issued ms of the backwards episode last logged
        # State of the current millisecond: the next ID to hand out and the last ID of the
        # millisecond. -1 forces the first call through _refill.
        self._ms = -1
        self._next = 0
        self._max = -1
        # IDs issued, for the metrics (no per-ID cost): those of the milliseconds before the
        # current one, plus ``_next - _base`` for the current one (``_base``: its first ID).
        # ``_ver`` is odd while _start_ms updates them (a seqlock, see _issued_total).
        self._issued = 0
        self._base = 0
        self._ver = 0
        forking.register(self)
        self._metrics_serial = _metrics.track(self)
        if lease is not None:  # weakly: the lease (kept by coord) must not keep the generator
            lost = weakref.WeakMethod(self._lease_lost)
            lease.on_lost(lambda instance_id: _call_weak(lost, instance_id))

    # -- public API ---------------------------------------------------------------------------

    @property
    def worker_id(self) -> int:
        """The 10-bit worker ID embedded in every ID (0..1023)."""
        return self._worker

    @property
    def epoch_ms(self) -> int:
        """The custom epoch, Unix milliseconds; pass it to :func:`im_infra.uid.parse`."""
        return self._epoch

    @property
    def max_backward_ms(self) -> int:
        """How far (ms) the clock may go back before :class:`ClockMovedBackwards` is raised."""
        return self._max_backward

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        dead = self._dead
        return dead is not None and dead[0] is GeneratorClosed

    def next_id(self) -> int:
        """Return a new unique ID, larger than every ID this generator returned before.

        Blocks for the rest of the millisecond if its 4,096 IDs are used up, and up to
        ``max_backward_ms`` if the clock went back. Raises :class:`ClockMovedBackwards`,
        :class:`TimestampOutOfRange`, :class:`GeneratorClosed`, :class:`GeneratorForked` or
        :class:`WorkerIdLost` (all :class:`UIDError`).
        """
        lock = self._lock
        lock.acquire()
        try:
            if (ms := self._clock() // _NS_PER_MS) == self._ms:
                nid = self._next
                if nid <= self._max:
                    self._next = nid + 1
                    return nid
            self._refill(ms)
            nid = self._next
            self._next = nid + 1
            return nid
        finally:
            lock.release()

    def next_ids(self, n: int) -> list[int]:
        """Return ``n`` new unique IDs in increasing order (a contiguous run for this generator).

        Equivalent to ``[next_id() for _ in range(n)]`` but computed a millisecond at a time,
        close to the Snowflake limit of 4,096,000 IDs/s; every ID's timestamp lies between the
        call's start and its return. The generator is held for the whole batch (about
        ``n / 4096`` ms), so other threads using it wait meanwhile.
        """
        if not is_plain_int(n) or n < 0:
            raise InvalidArgument(f"n must be a non-negative int, got {n!r}")
        lock = self._lock
        lock.acquire()
        try:
            clock = self._clock
            self._refill(clock() // _NS_PER_MS)
            start = self._next
            stop = self._max + 1
            if start + n <= stop:  # the whole batch fits into the current millisecond
                self._next = start + n
                return list(range(start, start + n))
            out = list(range(start, stop))
            self._next = stop
            remaining = n - (stop - start)
            while remaining:
                now = clock() // _NS_PER_MS
                last = self._ms
                if now > last:
                    # Use the next millisecond, not necessarily `now`: milliseconds that passed
                    # while this thread was descheduled are still unused and lie within this
                    # call, so the IDs' timestamps stay between the call's start and its end.
                    self._start_ms(last + 1)
                else:
                    self._refill(now)
                start = self._next
                stop = min(self._max + 1, start + remaining)
                out.extend(range(start, stop))
                self._next = stop
                remaining -= stop - start
            return out
        finally:
            lock.release()

    def parse(self, id: int) -> ParsedID:
        """:func:`im_infra.uid.parse` with this generator's epoch."""
        return parse(id, epoch_ms=self._epoch)

    def close(self) -> None:
        """Stop the generator: later calls raise :class:`GeneratorClosed`. Idempotent.

        A generator from :func:`im_infra.uid.from_coord` created with ``release_on_close=True``
        also releases its worker ID in coord.
        """
        with self._close_lock:
            if self.closed:
                return
            self._invalidate(GeneratorClosed, f"uid generator (worker {self._worker}) is closed")
            on_close, self._on_close = self._on_close, None
        if on_close is not None:
            try:
                on_close()
            except Exception as exc:
                _log.warning("releasing the worker ID failed", worker=self._worker, error=repr(exc))

    def __repr__(self) -> str:
        state = "open" if self._dead is None else self._dead[0].__name__
        return (
            f"<SnowflakeGenerator worker={self._worker} epoch_ms={self._epoch} "
            f"max_backward_ms={self._max_backward} {state}>"
        )

    # -- slow path ----------------------------------------------------------------------------

    def _refill(self, ms: int) -> None:
        """With the lock held: make ``_next..._max`` a non-empty run of the current millisecond.

        ``ms`` is a fresh clock reading in Unix milliseconds. Waits out an exhausted sequence
        and a small backwards step of the clock; raises for everything else.
        """
        while True:
            dead = self._dead
            if dead is not None:
                raise dead[0](dead[1])
            last = self._ms
            if ms > last:
                self._start_ms(ms)
                return
            if ms == last:
                if self._next <= self._max:
                    return
                ms = self._wait_until(last + 1)  # sequence exhausted: next millisecond
                continue
            backward = last - ms
            if backward > self._max_backward:
                # The caller gets ClockMovedBackwards; one warning per episode (not per call,
                # not at error level: the error is the caller's to report).
                if self._backward_logged != last:
                    self._backward_logged = last
                    _log.warning(
                        "clock moved backwards beyond the limit, refusing to issue IDs",
                        worker=self._worker,
                        backward_ms=backward,
                        max_backward_ms=self._max_backward,
                    )
                raise ClockMovedBackwards(
                    f"clock moved backwards by {backward} ms (limit max_backward_ms="
                    f"{self._max_backward}); no ID is issued until the clock reaches the last "
                    f"issued millisecond again",
                    backward_ms=backward,
                    max_backward_ms=self._max_backward,
                )
            _log.warning(
                "clock moved backwards, waiting for it to catch up",
                worker=self._worker,
                backward_ms=backward,
            )
            _metrics.CLOCK_BACKWARD_WAITS.add(1)
            ms = self._wait_until(last)

    def _start_ms(self, ms: int) -> None:
        offset = ms - self._epoch
        if not 0 <= offset <= MAX_TIMESTAMP_MS:
            raise TimestampOutOfRange(
                f"clock reads Unix ms {ms}, outside the range of this generator's IDs "
                f"({self._epoch}..{self._epoch + MAX_TIMESTAMP_MS}: epoch_ms plus 41 bits)"
            )
        if os.getpid() != self._pid:  # a fork the at-fork hook did not see (defence in depth)
            self._after_fork_in_child()  # sets _dead: the check below raises GeneratorForked
        lease = self._lease
        if lease is not None and not lease.held:  # released, or lost before the callback came
            # sets _dead: the check below raises WorkerIdLost to the caller, so no error line
            self._worker_id_lost(self._worker, reported_by_caller=True)
        base = (offset << TIMESTAMP_SHIFT) | self._worker_bits
        self._ver += 1
        self._issued += self._next - self._base  # the IDs of the millisecond that ends here
        self._base = base
        self._ms = ms
        self._next = base
        self._max = base | MAX_SEQUENCE
        self._ver += 1
        dead = self._dead
        if dead is not None:  # invalidated concurrently: keep it invalid
            self._max = -1
            raise dead[0](dead[1])

    def _wait_until(self, target: int) -> int:
        """Poll the clock until it reads ``target`` ms or later, or falls too far behind ``_ms``.

        Sleeps while more than 1 ms is left, then spins (``time.sleep`` oversleeps by tens of
        microseconds, which would cost up to 10 % of the 4,096 IDs/ms limit).
        """
        clock = self._clock
        floor = self._ms - self._max_backward
        while True:
            ms = clock() // _NS_PER_MS
            if ms >= target or ms < floor:
                return ms
            gap = target - ms
            if gap > 1:
                self._sleep((gap - 1) / 1000)

    # -- metrics ------------------------------------------------------------------------------

    def _issued_total(self) -> int:
        """IDs issued so far, read without the lock (by the metrics callback, at collection).

        ``_next`` alone moves on the hot path, which keeps the sum consistent; the other fields
        change together in :meth:`_start_ms`, between two increments of ``_ver``: a read that
        saw ``_ver`` odd or changed is retried.
        """
        for _ in range(1000):
            ver = self._ver
            if not ver & 1:
                total = self._issued + self._next - self._base
                if self._ver == ver:
                    return total
            time.sleep(0)  # let the writer finish its few statements
        return self._issued + self._next - self._base

    def __del__(self) -> None:
        # AttributeError if __init__ failed early; anything at interpreter shutdown
        with contextlib.suppress(Exception):
            _metrics.retire(self._metrics_serial, self._issued_total())

    # -- invalidation -------------------------------------------------------------------------

    def _invalidate(self, error: type[UIDError], message: str) -> None:
        """Make every later call raise ``error(message)``; lock-free (see the module docstring)."""
        self._dead = (error, message)
        self._max = -1

    def _lease_lost(self, instance_id: int) -> None:
        self._worker_id_lost(instance_id)

    def _worker_id_lost(self, instance_id: int, *, reported_by_caller: bool = False) -> None:
        """coord callback: the lease holding the worker ID is gone (an ``error`` line: nobody
        else reports it). With ``reported_by_caller`` the generator found the ID no longer held
        (released by ``provider.close()`` at shutdown, or lost) while issuing, and the caller
        gets :class:`WorkerIdLost`: an ``info`` line only, the error goes to the caller."""
        if self.closed:
            return
        if reported_by_caller:
            _log.info(
                "worker ID no longer held in coord (released or lost), the uid generator stops",
                worker=self._worker,
            )
        else:
            _log.error(
                "worker ID lost in coord, the uid generator stops",
                worker=self._worker,
                instance_id=instance_id,
            )
        self._invalidate(
            WorkerIdLost,
            f"the worker ID {self._worker} was lost in coord (its lease expired or was "
            f"revoked or released); another process may now hold it, so this generator stops. "
            f"Create a new one with uid.from_coord(...)",
        )

    def _after_fork_in_child(self) -> None:
        # The locks may have been held by another thread of the parent at fork time.
        self._lock = threading.Lock()
        self._close_lock = threading.Lock()
        parent = self._pid
        self._pid = os.getpid()
        self._ver += 1  # the child counts only the IDs it issues itself
        self._issued = 0
        self._base = self._next
        self._ver += 1
        self._invalidate(
            GeneratorForked,
            f"uid generator (worker {self._worker}) was created in process {parent} and "
            f"cannot be used in the forked child {self._pid}: the child would issue the same "
            f"IDs as its parent. Create a new generator in the child with its own worker ID "
            f"(e.g. uid.from_coord(...) on a new coord connection)",
        )


def _call_weak(method: weakref.WeakMethod[Any], instance_id: int) -> None:
    bound = method()
    if bound is not None:
        bound(instance_id)


def new_generator(
    instance_id: int,
    *,
    epoch_ms: int = DEFAULT_EPOCH_MS,
    clock: Clock = time.time_ns,
    sleep: Sleep = time.sleep,
    max_backward_ms: int = 5,
) -> SnowflakeGenerator:
    """Create a Snowflake generator for worker ``instance_id`` (the seed's ``NewGenerator``).

    ``instance_id`` must be an ``int`` in 0..1023 and unique among all live generators sharing
    an epoch (use :func:`im_infra.uid.from_coord` to have coord allocate it), else
    :class:`InvalidWorkerId` (a ``ValueError``). ``epoch_ms`` is the custom epoch (Unix ms,
    default 2024-01-01T00:00:00Z); ``clock`` returns int nanoseconds since the Unix epoch and
    ``sleep`` takes seconds (both injectable for tests); ``max_backward_ms`` is the largest
    backwards clock step that is waited out instead of raising :class:`ClockMovedBackwards`.
    """
    return SnowflakeGenerator(
        instance_id,
        epoch_ms=epoch_ms,
        clock=clock,
        sleep=sleep,
        max_backward_ms=max_backward_ms,
    )
