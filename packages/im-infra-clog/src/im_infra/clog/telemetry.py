"""The OpenTelemetry meter of an im-infra component (shared so every package names it alike).

Components emit metrics through the OpenTelemetry **API** only: a no-op until the application
installs an SDK, which then receives them (the API's proxy wires meters created earlier).
"""

from __future__ import annotations

from importlib import metadata

from opentelemetry import metrics

__all__ = ["meter"]


def meter(component: str) -> metrics.Meter:
    """The meter ``im_infra.<component>``, versioned as the installed ``im-infra-<component>``
    distribution (no version when running from a source tree without metadata)."""
    name = f"im_infra.{component}"
    try:
        return metrics.get_meter(name, metadata.version(f"im-infra-{component}"))
    except metadata.PackageNotFoundError:
        return metrics.get_meter(name)
