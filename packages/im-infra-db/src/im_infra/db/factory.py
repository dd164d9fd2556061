"""``new`` and ``new_async``: a database provider configured from ``db.yaml`` through coord.

(In 0.1.0 they were in ``provider.py`` and ``aio.py``: ``db.provider.new`` and
``db.aio.new_async`` still work, with a DeprecationWarning, until 0.2.0; docs/naming.md.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from im_infra.db._internal.core import from_config_center
from im_infra.db.aio import AsyncDBProvider
from im_infra.db.provider import DBProvider

if TYPE_CHECKING:
    from im_infra.coord import Provider as CoordProvider

__all__ = ["new", "new_async"]


def new(
    service_name: str | None = None, *, coord: CoordProvider | None = None, **overrides: Any
) -> DBProvider:
    """A provider for ``service_name``'s database, configured from ``db.yaml`` through coord.

    ``coord`` is an :class:`im_infra.coord.Provider` (None: the process's default provider when
    ``$IM_INFRA_ETCD_ENDPOINTS`` is set, else ``$IM_INFRA_CONFIG_DIR`` or defaults; sources and
    precedence in docs/configuration.md); ``overrides`` are DBConfig fields (snake_case or
    camelCase) and win over everything. ``slow_threshold`` is applied live; other changes are
    logged as needing a restart.
    No connection is made here; call :meth:`DBProvider.ping` to fail fast at startup.
    """
    return from_config_center(DBProvider, service_name, coord, overrides)


def new_async(
    service_name: str | None = None, *, coord: CoordProvider | None = None, **overrides: Any
) -> AsyncDBProvider:
    """The asyncio twin of :func:`im_infra.db.new` (same configuration; async drivers chosen
    for the backend). No connection is made here; ``await provider.ping()`` to fail fast."""
    return from_config_center(AsyncDBProvider, service_name, coord, overrides)
