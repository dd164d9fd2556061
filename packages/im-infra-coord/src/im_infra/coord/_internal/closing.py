"""``Closing``: the context-manager half of every coord object that has a ``close()``."""

from __future__ import annotations

from typing import Self


class Closing:
    """Mixin: ``with obj:`` calls ``obj.close()`` on the way out (close() is idempotent)."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
