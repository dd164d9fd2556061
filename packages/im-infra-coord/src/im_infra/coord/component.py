"""``Component``: what a package declares about its config document, once.

A component (kafka, redis, db, ...) states its document name, its pydantic model, which fields it
applies at run time, which values it cannot run without, and short environment-variable aliases.
Loading, layering, validation, redaction and live updates are coord's job; a component never
re-implements them. Packages publish their ``Component`` under the entry-point group
``im_infra.config`` (name = document name) so tools such as ``im-infra-coord config put`` can
validate a document for a component they do not know about.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from im_infra.coord._internal.documents import check_name
from im_infra.coord._internal.envlayer import field_variables, variable_name
from im_infra.coord.errors import ConfigError

M = TypeVar("M", bound=BaseModel)

ENTRY_POINT_GROUP = "im_infra.config"


@dataclass(frozen=True)
class Component(Generic[M]):
    """The declaration of one config document (``{name}.yaml``) and its model.

    ``live_fields``: dotted snake_case field paths (a section name covers every field in it)
    the component applies while running; a change to any other field is logged once as needing
    a restart. ``required``: dotted paths that must be set (non-empty) by some layer, each with
    a hint shown in the error. ``env_aliases``: extra environment variables, mapped to a dotted
    field path, read before the canonical ``IM_INFRA_<NAME>_<PATH>`` ones. ``error``: the
    exception raised for a bad configuration: the component package's own config error (a
    subclass of :class:`~im_infra.coord.ConfigError`, the shared root).
    """

    name: str
    model: type[M]
    live_fields: frozenset[str] = field(default_factory=frozenset)
    required: Mapping[str, str] = field(default_factory=dict)
    env_aliases: Mapping[str, str] = field(default_factory=dict)
    error: type[ConfigError] = ConfigError

    def __post_init__(self) -> None:
        check_name("component", self.name)
        if not (isinstance(self.error, type) and issubclass(self.error, ConfigError)):
            raise ConfigError(f"component {self.name!r}: error must subclass coord.ConfigError")

    def variable(self, path: str) -> str:
        """The environment variable for the field at dotted ``path``."""
        return variable_name(self.name, path)

    def variables(self) -> list[str]:
        """Every environment variable this component reads (aliases first)."""
        return [*self.env_aliases, *field_variables(self.name, self.model)]

    def is_live(self, path: str) -> bool:
        """Whether the field at dotted ``path`` is applied at run time."""
        return any(path == f or path.startswith(f + ".") for f in self.live_fields)

    def check_required(self, config: M, sources: str) -> None:
        """Raise ConfigError naming each required value no layer set and how to set it."""
        for path, hint in self.required.items():
            value: Any = config
            for part in path.split("."):
                value = getattr(value, part)
            if value in (None, "", [], {}, ()):
                names = [a for a, p in self.env_aliases.items() if p == path]
                names.append(self.variable(path))
                raise self.error(
                    f"{self.name} config: required setting '{path}' is not set (looked in "
                    f"{sources}). Set it in {self.name}.yaml (global or the service's document "
                    f"in the config center, or $IM_INFRA_CONFIG_DIR), with "
                    f"{' or '.join(names)}, or {hint}"
                )


def discover_components() -> dict[str, Component[Any]]:
    """Every component declared by an installed package (entry-point group ``im_infra.config``).

    An entry point that cannot be loaded raises ConfigError naming it."""
    found: dict[str, Component[Any]] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            component = ep.load()
        except Exception as exc:  # a broken plugin: say which one
            raise ConfigError(
                f"cannot load config component {ep.name!r} ({ep.value}): {exc}"
            ) from exc
        if not isinstance(component, Component):
            raise ConfigError(f"entry point {ep.name!r} ({ep.value}) is not a coord.Component")
        found[component.name] = component
    return found
