"""Finding the backends: configured ``IM_INFRA_*`` variables, else the repo's devstack."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

NEEDED = ("IM_INFRA_ETCD_ENDPOINTS", "IM_INFRA_KAFKA_BROKERS")
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"


class StackUnavailableError(RuntimeError):
    """No backends configured and the devstack could not start them."""


def _devstack() -> Path | None:
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "scripts" / "devstack"
        if candidate.is_file():
            return candidate
    return None


def ensure_backends() -> dict[str, str]:
    """Make sure etcd, Kafka and Redis addresses are in ``os.environ``; return them.

    Variables already set win. Otherwise ``scripts/devstack up`` installs and starts etcd and
    the Kafka-protocol broker (and checks the machine's Redis), and its ``env`` output is loaded.
    """
    if not all(os.environ.get(v) for v in NEEDED):
        devstack = _devstack()
        if devstack is None:
            missing = [v for v in NEEDED if not os.environ.get(v)]
            raise StackUnavailableError(
                f"{', '.join(missing)} not set and scripts/devstack not found: "
                "point the variables at your etcd and Kafka"
            )
        up = subprocess.run([str(devstack), "up"], capture_output=True, text=True)
        if up.returncode != 0:
            raise StackUnavailableError(f"scripts/devstack up failed:\n{up.stderr.strip()}")
        env = subprocess.run([str(devstack), "env"], capture_output=True, text=True, check=True)
        for line in env.stdout.splitlines():
            parts = shlex.split(line)
            if len(parts) == 2 and parts[0] == "export" and "=" in parts[1]:
                key, value = parts[1].split("=", 1)
                os.environ.setdefault(key, value)
    os.environ.setdefault("IM_INFRA_REDIS_URL", DEFAULT_REDIS)
    keys = (*NEEDED, "IM_INFRA_REDIS_URL")
    return {k: os.environ[k] for k in keys}
