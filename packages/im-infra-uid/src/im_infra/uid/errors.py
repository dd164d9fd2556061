"""Exceptions raised by im_infra.uid.

Every error raised by this package derives from :class:`UIDError`. Errors about a bad argument
also derive from :class:`ValueError`, so ``except ValueError`` keeps working for callers that do
not know this package.
"""

from __future__ import annotations

__all__ = [
    "ClockMovedBackwards",
    "GeneratorClosed",
    "GeneratorForked",
    "InvalidArgument",
    "InvalidId",
    "InvalidWorkerId",
    "TimestampOutOfRange",
    "UIDError",
    "WorkerIdLost",
    "WorkerIdUnavailable",
]


class UIDError(Exception):
    """Base class of every error raised by im_infra.uid."""


class InvalidArgument(UIDError, ValueError):  # noqa: N818 (the issue's names)
    """An argument is of the wrong type or out of its allowed range (the message says which)."""


class InvalidWorkerId(InvalidArgument):
    """The worker ID is not an ``int`` in ``0..1023``."""


class InvalidId(InvalidArgument):
    """The value given to :func:`im_infra.uid.parse` is not a Snowflake ID.

    A Snowflake ID is an ``int`` in ``0..2**63-1``.
    """


class ClockMovedBackwards(UIDError):  # noqa: N818 (the issue's names)
    """The clock went back further than the generator's ``max_backward_ms``.

    No ID is issued until the clock has caught up with the last issued millisecond again, so an
    ID is never duplicated and never smaller than one issued before.
    """

    def __init__(self, message: str, *, backward_ms: int, max_backward_ms: int) -> None:
        super().__init__(message)
        self.backward_ms = backward_ms
        self.max_backward_ms = max_backward_ms


class TimestampOutOfRange(UIDError):  # noqa: N818 (the issue's names)
    """The clock reads a time before the epoch or past the 41-bit range (~69.7 years after it)."""


class WorkerIdLost(UIDError):  # noqa: N818 (the issue's names)
    """coord reported the lease holding this generator's worker ID lost; generation stopped.

    Another process may now be allocated the same worker ID, so continuing could duplicate IDs.
    Create a new generator (``uid.from_coord(...)``) to get a fresh worker ID.
    """


class WorkerIdUnavailable(UIDError):  # noqa: N818 (the issue's names)
    """``uid.from_coord`` could not obtain a worker ID from coord (the cause is chained)."""


class GeneratorForked(UIDError):  # noqa: N818 (the issue's names)
    """The generator was created in a parent process and used in a forked child.

    A child must not continue its parent's sequence under the same worker ID (both processes
    would issue the same IDs): create a new generator in the child with its own worker ID.
    """


class GeneratorClosed(UIDError):  # noqa: N818 (the issue's names)
    """``next_id``/``next_ids`` was called after ``close()``."""
