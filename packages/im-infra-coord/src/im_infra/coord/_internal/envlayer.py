"""The environment layer: one naming rule for every field of every component.

``IM_INFRA_<COMPONENT>_<PATH>`` where ``<PATH>`` is the field's snake_case name, nested fields
joined by a double underscore, all upper case: ``IM_INFRA_DB_PASSWORD``,
``IM_INFRA_KAFKA_PRODUCER__LINGER_MS``, ``IM_INFRA_REDIS_RETRY__MAX_RETRIES``. A component may
declare short aliases for its most used fields (``IM_INFRA_KAFKA_BROKERS``,
``IM_INFRA_REDIS_URL``); the canonical name wins when both are set.

Values are strings that pydantic converts like document values; a list field takes a comma
separated list (or a YAML flow list ``[a, b]``), a mapping field a YAML flow mapping.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterator, Mapping
from typing import Any

import yaml
from pydantic import BaseModel

from im_infra.coord._internal.documents import Layer
from im_infra.coord.errors import ConfigError

PREFIX = "IM_INFRA_"


def _unwrap(annotation: Any) -> Any:
    """``X | None`` -> ``X``; ``Annotated[X, ...]`` -> ``X``."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if origin is typing.Union or origin is types.UnionType:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return _unwrap(args[0])
    return annotation


def _fields(model: type[BaseModel], path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, field in model.model_fields.items():
        inner = _unwrap(field.annotation)
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            yield from _fields(inner, (*path, name))
        else:
            yield (*path, name)


def variable_name(component: str, path: tuple[str, ...] | str) -> str:
    """The environment variable of ``component``'s field ``path`` (``("common", "brokers")`` or
    ``"common.brokers"``)."""
    parts = path.split(".") if isinstance(path, str) else path
    return PREFIX + component.upper().replace("-", "_") + "_" + "__".join(parts).upper()


def field_variables(component: str, model: type[BaseModel]) -> dict[str, tuple[str, ...]]:
    """Every environment variable ``component`` reads, mapped to its field path."""
    return {variable_name(component, path): path for path in _fields(model)}


def _annotation(model: type[BaseModel], path: tuple[str, ...]) -> Any:
    current: Any = model
    annotation: Any = None
    for part in path:
        annotation = _unwrap(current.model_fields[part].annotation)
        current = annotation
    return annotation


def _convert(raw: str, annotation: Any, variable: str) -> Any:
    origin = typing.get_origin(annotation) or annotation
    try:
        if origin in (list, tuple, set, frozenset):
            text = raw.strip()
            if text.startswith("["):
                return yaml.safe_load(text)
            return [item.strip() for item in text.split(",") if item.strip()]
        if origin in (dict, Mapping):
            return yaml.safe_load(raw) if raw.strip() else {}
    except yaml.YAMLError as exc:
        problem = str(exc).splitlines()[0] if str(exc) else "invalid YAML"
        raise ConfigError(f"environment variable {variable} is malformed: {problem}") from None
    return raw


def _nest(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {path[-1]: value}
    for part in reversed(path[:-1]):
        out = {part: out}
    return out


def env_layers(
    component: str,
    model: type[BaseModel],
    environ: Mapping[str, str],
    aliases: Mapping[str, str] | None = None,
) -> list[Layer]:
    """One layer per environment variable set for ``component`` (aliases first, so the
    canonical names win). Empty variables are ignored."""
    variables = field_variables(component, model)
    layers: list[Layer] = []
    for alias, dotted in (aliases or {}).items():
        raw = environ.get(alias, "")
        if raw.strip():
            path = tuple(dotted.split("."))
            value = _convert(raw, _annotation(model, path), alias)
            layers.append(Layer(f"environment variable {alias}", _nest(path, value)))
    for variable, path in variables.items():
        raw = environ.get(variable, "")
        if raw.strip():
            value = _convert(raw, _annotation(model, path), variable)
            layers.append(Layer(f"environment variable {variable}", _nest(path, value)))
    return layers
