"""The im-infra-coord CLI against the stack's etcd."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from im_infra import coord
from im_infra.coord.cli import main


def test_put_get_list_delete(
    etcd_endpoints: str, unique: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = tmp_path / "kafka.yaml"
    doc.write_text("brokers: [k1:9092]\nacks: all\n")
    base = ["--endpoints", etcd_endpoints, "--env", unique, "config"]
    try:
        assert main([*base, "put", "global/kafka.yaml", str(doc)]) == 0
        assert f"/im-infra/config/{unique}/global/kafka.yaml" in capsys.readouterr().out
        assert main([*base, "get", "global/kafka.yaml", "--show-revision"]) == 0
        out = capsys.readouterr()
        assert out.out == doc.read_text()
        assert "mod_revision" in out.err
        rev = int(out.err.split()[-1])
        assert main([*base, "put", "global/kafka.yaml", str(doc), "--expect-revision", "1"]) == 1
        assert "changed" in capsys.readouterr().err
        assert (
            main([*base, "put", "global/kafka.yaml", str(doc), "--expect-revision", str(rev)]) == 0
        )
        capsys.readouterr()
        assert main([*base, "list"]) == 0
        assert capsys.readouterr().out.startswith("global/kafka.yaml\t")
        assert main([*base, "delete", "global/kafka.yaml"]) == 0
        assert main([*base, "get", "global/kafka.yaml"]) == 1
        assert "not found" in capsys.readouterr().err
    finally:
        with coord.connect(etcd_endpoints, env=unique) as p:
            p.client.delete(p.config.root, prefix=True)


def test_watch_prints_events(
    etcd_endpoints: str, unique: str, capsys: pytest.CaptureFixture[str]
) -> None:
    codes: list[int] = []
    argv = [
        "--endpoints",
        etcd_endpoints,
        "--env",
        unique,
        "config",
        "watch",
        "global/",
        "--prefix",
        "--count",
        "2",
    ]
    t = threading.Thread(target=lambda: codes.append(main(argv)))
    t.start()
    with coord.connect(etcd_endpoints, env=unique) as p:
        deadline = time.monotonic() + 5
        while "watching" not in capsys.readouterr().err and time.monotonic() < deadline:
            time.sleep(0.05)
        p.config.set("global/redis.yaml", "addr: r:6379\n")
        p.config.delete("global/redis.yaml")
        t.join(10)
    assert codes == [0]
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("PUT global/redis.yaml revision ")
    assert out[1] == "addr: r:6379"
    assert out[2].startswith("DELETE global/redis.yaml revision ")


def test_console_script_is_installed(etcd_endpoints: str, unique: str) -> None:
    script = Path(sys.executable).parent / "im-infra-coord"
    assert script.exists(), "the [project.scripts] entry point is not installed"
    proc = subprocess.run(
        [str(script), "--endpoints", etcd_endpoints, "--env", unique, "config", "list"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
