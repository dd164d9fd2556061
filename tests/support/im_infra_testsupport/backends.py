"""The port and health probes the tests share with the devstack (``im_infra_testsupport.devstack``,
the program behind ``scripts/devstack``), so that the stack and the tests agree on what
"healthy" means."""

from __future__ import annotations

from im_infra_testsupport.devstack import (
    NOIDA_VERSION,
    TANSU_VERSION,
    ensure_tansu,
    etcd_healthy,
    free_port,
    kafka_healthy,
    tansu_command,
    tansu_env,
    tcp_open,
)

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
