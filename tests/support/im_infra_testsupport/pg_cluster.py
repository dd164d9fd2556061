"""A PostgreSQL primary and a streaming replica of it, started by the tests.

The shared PostgreSQL has no replication entry in pg_hba.conf (changing it would touch a server
other engineers use), so the tests run a primary of their own: ``initdb`` into a fresh data
directory on a free port (its default pg_hba allows replication from 127.0.0.1 with trust), then
``pg_basebackup -R`` into a second directory started as a hot standby. The server binaries must
not run as root: as root, every command runs as the ``postgres`` user.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from im_infra_testsupport.backends import free_port, tcp_open


def pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if os.environ.get("IM_INFRA_PG_BIN"):
        return Path(os.environ["IM_INFRA_PG_BIN"])
    return Path(found[-1]).parent if found else None


def _as_server_user(args: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


@dataclass
class Node:
    bin: Path
    data: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        self._ctl(
            "start", "-w", "-t", "60", "-l", str(self.data / "server.log"),
            "-o", f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._ctl("stop", "-w", "-m", mode)

    def _ctl(self, *args: str) -> None:
        subprocess.run(
            _as_server_user([str(self.bin / "pg_ctl"), "-D", str(self.data), *args]),
            check=True,
            capture_output=True,
            timeout=90,
        )


class Cluster:
    """``primary`` and ``replica`` Nodes in a private temporary directory."""

    def __init__(self, bin_dir: Path) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="im-infra-pg-"))
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        self.primary = Node(bin_dir, self.root / "primary", free_port())
        self.replica = Node(bin_dir, self.root / "replica", free_port())

        def run(*args: object) -> None:
            command = _as_server_user([str(x) for x in args])
            subprocess.run(command, check=True, capture_output=True, timeout=120)

        run(bin_dir / "initdb", "-D", self.primary.data, "-U", "postgres", "--auth=trust", "-N")
        self.primary.start()
        run(
            bin_dir / "pg_basebackup", "-h", "127.0.0.1", "-p", self.primary.port,
            "-U", "postgres", "-D", self.replica.data, "-R", "-X", "stream",
        )  # fmt: skip
        self.replica.start()
        deadline = time.monotonic() + 30
        while not tcp_open("127.0.0.1", self.replica.port):
            assert time.monotonic() < deadline, "the replica did not start"
            time.sleep(0.1)

    def close(self) -> None:
        for node in (self.replica, self.primary):
            with contextlib.suppress(subprocess.CalledProcessError):  # already stopped
                node.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
