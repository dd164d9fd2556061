"""Parsing, merging and validating configuration documents (pure logic, no I/O)."""

from __future__ import annotations

import json
import os
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from im_infra.coord._internal.redact import is_secret_name, redact, secrets_in
from im_infra.coord.errors import ConfigError

M = TypeVar("M", bound=BaseModel)

CONFIG_ROOT = "/im-infra/config"
ENV_VAR = "IM_INFRA_ENV"
CONFIG_DIR_VAR = "IM_INFRA_CONFIG_DIR"
DEFAULT_ENV = "dev"


def resolve_env(env: str | None = None) -> str:
    """``env``, else $IM_INFRA_ENV, else "dev"."""
    return env or os.environ.get(ENV_VAR) or DEFAULT_ENV


def config_root(env: str) -> str:
    """The etcd prefix holding environment ``env``'s documents (ends with "/")."""
    if not env or "/" in env:
        raise ConfigError(f"invalid environment name {env!r}: must be non-empty without '/'")
    return f"{CONFIG_ROOT}/{env}/"


def check_name(kind: str, value: str) -> None:
    """Refuse a component or service name that is empty or would escape its directory."""
    if not isinstance(value, str) or not value or "/" in value or value in (".", ".."):
        raise ConfigError(f"invalid {kind} name {value!r}: must be non-empty without '/'")


def document_keys(env: str, service: str, component: str) -> tuple[str, str]:
    """The etcd keys of the global and the service document, in that order."""
    check_name("component", component)
    check_name("service", service)
    root = config_root(env)
    return f"{root}global/{component}.yaml", f"{root}{service}/{component}.yaml"


@dataclass(frozen=True)
class Layer:
    """One source of configuration values: a document (or overrides) and where it came from."""

    source: str
    data: Mapping[str, Any]


def parse_document(raw: bytes | str, source: str) -> dict[str, Any]:
    """Parse a YAML or JSON document (JSON is YAML) into a mapping.

    An empty document is an empty mapping. Anything else that is not a mapping, or that does not
    parse, raises :class:`ConfigError` naming ``source``.
    """
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        if source.endswith(".json"):
            data = json.loads(text) if text.strip() else None
        else:
            data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = exc.problem or exc.context or "invalid YAML"
        raise ConfigError(f"config document {source} is malformed: {problem}{where}") from exc
    except (yaml.YAMLError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        problem = str(exc).replace("\n", " ")
        raise ConfigError(f"config document {source} is malformed: {problem}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config document {source} must be a mapping at top level, got {type(data).__name__}"
        )
    return data


def dump_document(data: Any, key: str) -> str:
    """Serialise ``data`` as JSON when ``key`` ends in ``.json``, else as YAML."""
    if key.endswith(".json"):
        return json.dumps(data, indent=2, sort_keys=False, ensure_ascii=False) + "\n"
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def deep_merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``top`` over ``base``: mappings merge recursively, any other value replaces."""
    out: dict[str, Any] = dict(base)
    for key, value in top.items():
        old = out.get(key)
        if isinstance(old, Mapping) and isinstance(value, Mapping):
            out[key] = deep_merge(old, value)
        else:
            out[key] = value
    return out


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    """The BaseModel class inside ``annotation`` (``Model``, ``Model | None``), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        models = [m for a in typing.get_args(annotation) if (m := _nested_model(a)) is not None]
        if len(models) == 1:
            return models[0]
    return None


def _key_map(model: type[BaseModel]) -> dict[str, tuple[str, type[BaseModel] | None]]:
    """Map every accepted spelling of each field (name and alias) to (canonical key, nested)."""
    mapping: dict[str, tuple[str, type[BaseModel] | None]] = {}
    for name, field in model.model_fields.items():
        alias = field.validation_alias if isinstance(field.validation_alias, str) else field.alias
        canonical = alias or name
        nested = _nested_model(field.annotation)
        mapping[name] = (canonical, nested)
        if alias:
            mapping[alias] = (canonical, nested)
    return mapping


def normalize_keys(model: type[BaseModel], data: Mapping[str, Any]) -> dict[str, Any]:
    """Rename keys to the spelling the model validates by (its alias, else the field name).

    Documents use the seed's camelCase aliases while code overrides may use snake_case names;
    normalising before merging makes a later layer replace an earlier one whichever spelling
    each uses. Unknown keys are kept as they are (the model decides whether extras are allowed).
    """
    keys = _key_map(model)
    out: dict[str, Any] = {}
    for key, value in data.items():
        canonical, nested = keys.get(key, (key, None))
        if nested is not None and isinstance(value, Mapping):
            value = normalize_keys(nested, value)
        out[canonical] = value
    return out


def _has_path(data: Mapping[str, Any], path: Sequence[str | int]) -> bool:
    node: Any = data
    for part in path:
        if isinstance(node, Mapping):
            if part not in node:
                return False
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            return False
    return True


def _describe(exc: ValidationError, layers: Sequence[Layer], what: str) -> str:
    problems = []
    for err in exc.errors():
        loc = tuple(err.get("loc", ()))
        field = ".".join(str(p) for p in loc) or "(document)"
        source = "built-in defaults"
        for layer in reversed(layers):
            if _has_path(layer.data, loc):
                source = layer.source
                break
        else:
            if err.get("type") == "missing":
                source = "no document sets it"
        value = err.get("input")
        if err.get("type") == "missing":
            shown = ""
        elif err.get("type") == "extra_forbidden" or isinstance(value, Mapping | list):
            shown = ""  # an unknown field (a misspelt password?) or a whole section: not echoed
        elif any(is_secret_name(str(part)) for part in loc):
            shown = " (got ***)"  # never echo a password, token or DSN back
        else:
            shown = f" (got {value!r})"
        problems.append(f"field '{field}' from {source}: {err.get('msg')}{shown}")
    secrets: set[str] = set()
    for layer in layers:
        secrets |= secrets_in(layer.data)
    return redact(f"invalid {what} config: " + "; ".join(problems), secrets)


def validate_layers(model: type[M], layers: Sequence[Layer], what: str) -> M:
    """Deep-merge ``layers`` (later wins) over the model's defaults and validate the result."""
    normalized = [Layer(layer.source, normalize_keys(model, layer.data)) for layer in layers]
    merged: dict[str, Any] = {}
    for layer in normalized:
        merged = deep_merge(merged, layer.data)
    try:
        return model.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, normalized, what)) from exc
