"""Deprecated aliases for renamed public names (docs/naming.md lists every rename).

A package that renames a public name keeps the old one for one minor version, warning on use.
A module attribute::

    __getattr__ = deprecated_names(__name__, {"KafkaAsyncProducer": "AsyncKafkaProducer"}, "0.2.0")

The module's ``__getattr__`` (PEP 562) is only consulted for names the module does not define,
so the new names cost nothing and the old ones warn each time they are looked up. A name that
moved to another module is given as ``"im_infra.db.factory.new"`` (imported on first use, so
the two modules may import each other). A method keeps its old name as a method that warns and
calls the new one::

    def set_nx(self, key: str, value: Any) -> bool:
        warn_renamed("Cache.set_nx", "setnx", "0.2.0")
        return self.setnx(key, value)
"""

from __future__ import annotations

import importlib
import sys
import warnings
from collections.abc import Callable, Mapping

__all__ = ["deprecated_names", "warn_renamed"]


def warn_renamed(old: str, new: str, removed_in: str, *, stacklevel: int = 3) -> None:
    """Warn (DeprecationWarning) that ``old`` was renamed ``new`` and goes away in
    ``removed_in``; ``stacklevel`` 3 blames the caller of the function calling this."""
    warnings.warn(
        f"{old} is deprecated and will be removed in {removed_in}; use {new}",
        DeprecationWarning,
        stacklevel=stacklevel,
    )


def deprecated_names(
    module: str, renamed: Mapping[str, str], removed_in: str
) -> Callable[[str], object]:
    """A module ``__getattr__`` resolving each old name in ``renamed`` (old -> new) to the new
    name's value, with a DeprecationWarning saying what to use and when the old name goes away.
    A new name without a dot is looked up in ``module``; a dotted one (``package.module.name``)
    in that module, imported on first use."""
    renamed = dict(renamed)

    def module_getattr(name: str) -> object:
        new = renamed.get(name)
        if new is None:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        warn_renamed(f"{module}.{name}", new, removed_in)
        where, _, attr = new.rpartition(".")
        if not where:
            return getattr(sys.modules[module], new)
        return getattr(importlib.import_module(where), attr)

    return module_getattr
