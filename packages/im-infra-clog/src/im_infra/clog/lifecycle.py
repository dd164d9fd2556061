"""The ``close()`` protocol every im-infra object with resources follows.

Objects that hold connections, threads or leases have an idempotent ``close()`` and are
context managers; these mixins supply the context-manager half, so each class writes only
``close()`` (kept here, in the package every component depends on, rather than copied).
"""

from __future__ import annotations

from typing import Self

__all__ = ["AsyncClosing", "Closing"]


class Closing:
    """Mixin: ``with obj:`` returns ``obj`` and calls ``obj.close()`` on the way out."""

    __slots__ = ()

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClosing:
    """Mixin: ``async with obj:`` returns ``obj`` and awaits ``obj.close()`` on the way out."""

    __slots__ = ()

    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
