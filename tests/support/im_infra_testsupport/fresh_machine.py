"""A machine on which none of the servers is installed, made out of this one for a test.

``FreshMachine`` builds a ``bin/`` directory that links every program on this machine's PATH
except the servers (redis-server, valkey-server, etcd), uv and apt-get (so nothing can be
installed from Debian: the non-root path), and with ``python3`` the base interpreter (the one
with pip, not the workspace's virtualenv). It hands out an environment with that PATH, no
``IM_INFRA_*`` addresses, a cache directory of its own for the uv that the bootstrap installs,
and a Redis port where nothing listens, so that devstack cannot find the machine's Redis on 6379.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from im_infra_testsupport.backends import free_port

REPO = Path(__file__).resolve().parents[3]
HIDDEN = ("redis-", "valkey-", "etcd", "uv", "uvx", "apt", "apt-get", "python", "pip")


def _base_python() -> Path:
    """This interpreter's base installation (it has pip; the workspace's venv has not)."""
    name = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (Path(sys.base_prefix) / "bin" / name, Path(sys.base_prefix) / "bin/python3"):
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"no base interpreter under {sys.base_prefix}/bin")


def _uv_cache_dir() -> str:
    """The machine's uv cache: the fresh machine downloads nothing that uv already has."""
    cached = os.environ.get("UV_CACHE_DIR")
    if cached:
        return cached
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return str(Path(xdg) / "uv")


@dataclass
class FreshMachine:
    root: Path

    def __post_init__(self) -> None:
        self.bin = self.root / "bin"
        self.bin.mkdir(parents=True)
        for entry in os.environ.get("PATH", "").split(os.pathsep):
            directory = Path(entry)
            if not entry or not directory.is_dir() or ".venv" in directory.parts:
                continue
            if "shims" in directory.parts:  # pyenv's python3/uv shims
                continue
            for program in directory.iterdir():
                link = self.bin / program.name
                if program.name.startswith(HIDDEN) or link.exists() or link.is_symlink():
                    continue
                if program.is_file() and os.access(program, os.X_OK):
                    link.symlink_to(program)
        (self.bin / "python3").symlink_to(_base_python())
        self.redis_port = free_port()

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("IM_INFRA_", "VIRTUAL_ENV", "UV_", "PYTHON", "ETCD_"))
        }
        env.update(
            PATH=str(self.bin),
            XDG_CACHE_HOME=str(self.root / "cache"),
            UV_CACHE_DIR=_uv_cache_dir(),
            IM_INFRA_DEVSTACK_REDIS_PORT=str(self.redis_port),
            **extra,
        )
        return env

    def has(self, program: str) -> bool:
        return (self.bin / program).exists()


def copy_worktree(dest: Path) -> Path:
    """The repository's tracked files (as they are in the work tree) copied to ``dest``: a fresh
    clone, without .venv, .devstack or anything else a run left behind."""
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.split(b"\0")
    for raw in files:
        if not raw:
            continue
        rel = raw.decode()
        src = REPO / rel
        if not src.exists():  # deleted in the work tree, not yet committed
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(src.read_bytes())
        target.chmod(src.stat().st_mode)
    return dest
