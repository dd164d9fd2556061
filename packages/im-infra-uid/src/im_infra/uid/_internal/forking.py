"""Fork safety: objects registered here are told when this process forks.

``os.register_at_fork(after_in_child=...)`` runs in the child right after ``os.fork()``
(including ``multiprocessing``'s fork start method). Registered objects are held weakly, so the
registry never keeps a generator alive.
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import Protocol

__all__ = ["ForkAware", "register"]


class ForkAware(Protocol):
    def _after_fork_in_child(self) -> None: ...


_objects: weakref.WeakSet[ForkAware] = weakref.WeakSet()
_registry_lock = threading.Lock()


def register(obj: ForkAware) -> None:
    """Call ``obj._after_fork_in_child()`` in every child forked from now on while ``obj`` lives."""
    with _registry_lock:
        _objects.add(obj)


def _after_fork_in_child() -> None:
    global _registry_lock
    # The lock may have been held by another thread of the parent at fork time.
    _registry_lock = threading.Lock()
    for obj in list(_objects):
        obj._after_fork_in_child()


if hasattr(os, "register_at_fork"):  # every POSIX platform; Windows cannot fork
    os.register_at_fork(after_in_child=_after_fork_in_child)
