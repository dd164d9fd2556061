"""Loading ``kafka.yaml`` through coord and normalising keyword overrides."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from im_infra import coord
from im_infra.mq.config import KafkaConfig, apply_brokers_env
from im_infra.mq.errors import ConfigError

__all__ = ["load_kafka_config", "to_aliases"]


def to_aliases(model: type[BaseModel], data: Mapping[str, Any]) -> dict[str, Any]:
    """Rewrite snake_case keys of ``data`` to the model's (camelCase) aliases, recursively.

    Documents use the seed's camelCase; overrides may use either spelling. Normalising before the
    deep merge means an override ``linger_ms`` replaces a document's ``lingerMs`` instead of both
    ending up in one mapping. Unknown keys are kept so validation can name them.
    """
    lookup: dict[str, tuple[str, Any]] = {}
    for name, info in model.model_fields.items():
        alias = info.alias or name
        lookup[name] = lookup[alias] = (alias, info.annotation)
    out: dict[str, Any] = {}
    for key, value in data.items():
        alias, annotation = lookup.get(key, (key, None))
        if (
            isinstance(value, Mapping)
            and isinstance(annotation, type)
            and issubclass(annotation, BaseModel)
        ):
            out[alias] = to_aliases(annotation, value)
        else:
            out[alias] = value
    return out


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "<document>"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


def load_kafka_config(
    service_name: str,
    *,
    provider: coord.Provider | None,
    overrides: Mapping[str, Any] | None,
) -> KafkaConfig:
    """Resolve ``kafka.yaml`` for ``service_name`` (coord layers, overrides, broker env)."""
    if not service_name:
        raise ConfigError("service_name must be a non-empty string")
    normalised = to_aliases(KafkaConfig, overrides) if overrides else None
    try:
        config = coord.load_component_config(
            "kafka", KafkaConfig, service=service_name, provider=provider, overrides=normalised
        )
    except coord.ConfigError as exc:
        raise ConfigError(
            f"invalid kafka configuration for service {service_name!r}: {exc}"
        ) from exc
    except ValidationError as exc:
        raise ConfigError(
            f"invalid kafka configuration for service {service_name!r}: {_describe(exc)}"
        ) from exc
    return apply_brokers_env(config)
