"""How a component gets its configuration: ``live_config`` and ``load_component_config``.

Both take a :class:`Component` (or a document name and model), the service name and, optionally,
a provider (``coord=``); without one the process's :func:`default_provider` serves (etcd from
``$IM_INFRA_ETCD_ENDPOINTS``), and without that only ``$IM_INFRA_CONFIG_DIR``, the environment,
the defaults and the keyword overrides apply. The sources and their precedence are described in
:mod:`im_infra.coord.component_config` and docs/configuration.md.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel

from im_infra.coord._internal.documents import resolve_env
from im_infra.coord.component import Component
from im_infra.coord.component_config import LiveConfig, Resolver
from im_infra.coord.config import _as_component
from im_infra.coord.default_provider import default_provider
from im_infra.coord.errors import ConfigError, CoordUnavailable
from im_infra.coord.protocols import Provider

__all__ = ["live_config", "load_component_config", "pick_provider"]

M = TypeVar("M", bound=BaseModel)


def pick_provider(
    coord: Provider | None, *, where: str, **deprecated: Provider | None
) -> Provider | None:
    """``coord``, or the value of a deprecated keyword naming the provider (``provider=``,
    ``coord_provider=``), with a DeprecationWarning. Both at once is a ConfigError."""
    for name, value in deprecated.items():
        if value is None:
            continue
        warnings.warn(
            f"{where}({name}=...) is deprecated and will be removed in the next minor version; "
            "use coord=...",
            DeprecationWarning,
            stacklevel=3,
        )
        if coord is not None and coord is not value:
            raise ConfigError(f"{where}: pass the provider once, as coord= (not also {name}=)")
        coord = value
    return coord


def _service(service: str | None, provider: Provider | None, spec: Component[Any]) -> str:
    if service:
        return service
    named = getattr(provider, "service", None) if provider is not None else None
    if isinstance(named, str) and named:
        return named
    raise spec.error(
        f"{spec.name} config needs a service name: pass it, or use a provider connected with "
        "service=... ($IM_INFRA_SERVICE)"
    )


def live_config(
    component: Component[M] | str,
    service: str | None = None,
    *,
    model: type[M] | None = None,
    coord: Provider | None = None,
    overrides: Mapping[str, Any] | None = None,
    env: str | None = None,
) -> LiveConfig[M]:
    """``component``'s config for ``service``, kept current through the provider's shared watch
    (static when there is no config center). ``service`` defaults to the provider's.

    ``env`` is the environment when there is no provider (a provider has its own: passing a
    different one is a ConfigError). Raises the component's config error (secrets redacted)
    naming the document, field and problem.
    """
    spec = _as_component(component, model)
    provider = coord if coord is not None else default_provider()
    name = _service(service, provider, spec)
    if provider is None:
        return LiveConfig(Resolver(spec, name, env=resolve_env(env), overrides=overrides))
    manager = provider.config
    if env is not None and env != manager.env:
        raise spec.error(
            f"{spec.name} config: env={env!r} differs from the provider's environment "
            f"{manager.env!r}; connect the provider with env={env!r}"
        )
    return manager.component(spec, service=name, overrides=overrides)


def _load_once(
    spec: Component[M],
    service: str,
    provider: Provider,
    env: str,
    overrides: Mapping[str, Any] | None,
) -> M:
    resolver = Resolver(spec, service, env=env, overrides=overrides)
    try:
        raw: dict[str, bytes | None] = {}
        for key in resolver.keys:
            entry = provider.config.get(key)
            raw[key] = None if entry is None else entry.value
    except CoordUnavailable as exc:
        return LiveConfig(resolver, unreachable=f"etcd unreachable ({exc})").value
    return resolver.build(resolver.etcd_layers(raw))


def load_component_config(
    component: Component[M] | str,
    model: type[M] | None = None,
    *,
    service: str | None = None,
    coord: Provider | None = None,
    overrides: Mapping[str, Any] | None = None,
    env: str | None = None,
    provider: Provider | None = None,
) -> M:
    """Resolve, merge and validate ``component``'s config for ``service`` once (no watch).

    Raises :class:`ConfigError` naming the document, the field and the problem when a document
    is malformed or a value is invalid. etcd being unreachable is not an error: the local
    directory (or the defaults) is used and one warning is logged. ``provider=`` is the
    deprecated spelling of ``coord=``.
    """
    spec = _as_component(component, model)
    chosen = pick_provider(coord, where="load_component_config", provider=provider)
    if chosen is None:
        chosen = default_provider()
    name = _service(service, chosen, spec)
    if chosen is None:
        return LiveConfig(Resolver(spec, name, env=resolve_env(env), overrides=overrides)).value
    return _load_once(spec, name, chosen, env or chosen.config.env, overrides)
