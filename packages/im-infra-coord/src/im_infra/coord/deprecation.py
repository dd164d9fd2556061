"""Deprecated aliases for renamed public names (docs/naming.md lists every rename).

A package that renames a public name keeps the old one for one minor version, warning on use::

    __getattr__ = deprecated_names(__name__, {"KafkaAsyncProducer": "AsyncKafkaProducer"}, "0.2.0")

The module's ``__getattr__`` (PEP 562) is only consulted for names the module does not define,
so the new names cost nothing and the old ones warn each time they are looked up.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Mapping

__all__ = ["deprecated_names"]


def deprecated_names(
    module: str, renamed: Mapping[str, str], removed_in: str
) -> Callable[[str], object]:
    """A module ``__getattr__`` resolving each old name in ``renamed`` (old -> new) to the new
    name's value in ``module``, with a DeprecationWarning saying what to use and when the old
    name goes away."""
    renamed = dict(renamed)

    def module_getattr(name: str) -> object:
        new = renamed.get(name)
        if new is None:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        warnings.warn(
            f"{module}.{name} is deprecated and will be removed in {removed_in}; use {new}",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(sys.modules[module], new)

    return module_getattr
