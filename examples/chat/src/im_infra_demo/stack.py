"""Finding the backends: configured ``IM_INFRA_*`` variables, else the repo's devstack."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

NEEDED = ("IM_INFRA_ETCD_ENDPOINTS", "IM_INFRA_KAFKA_BROKERS")
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"


class StackUnavailableError(RuntimeError):
    """No backends configured and the devstack could not start them."""


@dataclass(frozen=True)
class Backends:
    """The addresses the demo uses, and who started the servers."""

    etcd: str
    kafka: str
    redis: str
    devstack: Path | None
    """``scripts/devstack`` when it started (or reused) the servers; None when the
    ``IM_INFRA_*`` variables named them."""


def _devstack() -> Path | None:
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "scripts" / "devstack"
        if candidate.is_file():
            return candidate
    return None


def ensure_backends() -> Backends:
    """Make sure etcd, Kafka and Redis addresses are in ``os.environ``; return them.

    Variables already set win. Otherwise ``scripts/devstack up --demo`` installs and starts
    etcd, the Kafka-protocol broker and Redis (its progress lines go to stderr), and its
    ``env`` output fills in the variables that are not set.
    """
    devstack = None
    if not all(os.environ.get(v) for v in NEEDED):
        devstack = _devstack()
        if devstack is None:
            missing = [v for v in NEEDED if not os.environ.get(v)]
            raise StackUnavailableError(
                f"{', '.join(missing)} not set and scripts/devstack not found: "
                "point the variables at your etcd and Kafka"
            )
        # devstack is stdlib-only; it finds uv or a Python with pip itself (this venv has none)
        up = subprocess.run([sys.executable, str(devstack), "up", "--demo"], check=False)
        if up.returncode != 0:
            raise StackUnavailableError(
                f"scripts/devstack up --demo failed (exit {up.returncode}); its messages are above"
            )
        env = subprocess.run(
            [sys.executable, str(devstack), "env"], capture_output=True, text=True, check=False
        )
        if env.returncode != 0:
            raise StackUnavailableError(f"scripts/devstack env failed:\n{env.stderr.strip()}")
        for line in env.stdout.splitlines():
            parts = shlex.split(line)
            if len(parts) == 2 and parts[0] == "export" and "=" in parts[1]:
                key, value = parts[1].split("=", 1)
                os.environ.setdefault(key, value)
    os.environ.setdefault("IM_INFRA_REDIS_URL", DEFAULT_REDIS)
    return Backends(
        etcd=os.environ["IM_INFRA_ETCD_ENDPOINTS"],
        kafka=os.environ["IM_INFRA_KAFKA_BROKERS"],
        redis=os.environ["IM_INFRA_REDIS_URL"],
        devstack=devstack,
    )
