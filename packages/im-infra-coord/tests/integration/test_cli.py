"""The im-infra-coord CLI against the stack's etcd."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from im_infra import coord
from im_infra.coord.cli import main
from im_infra_testsupport.tcpproxy import TcpProxy


def test_put_get_list_delete(
    etcd_endpoints: str, unique: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = tmp_path / "kafka.yaml"
    doc.write_text("common:\n  brokers: [k1:9092]\nproducer:\n  lingerMs: 7\n")
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


@pytest.mark.parametrize(
    ("key", "text", "field"),
    [
        ("global/kafka.yaml", "producer:\n  batchSize: soon\n", "producer.batchSize"),
        ("svc/kafka.yaml", "producer:\n  lingerMS: 5\n", "producer.lingerMS"),
        ("global/redis.yaml", "poolSize: -1\n", "poolSize"),
        ("svc/db.yaml", "driver: oracle\n", "driver"),
    ],
)
def test_put_refuses_a_document_its_component_schema_rejects(
    etcd_endpoints: str,
    unique: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    key: str,
    text: str,
    field: str,
) -> None:
    doc = tmp_path / "doc.yaml"
    doc.write_text(text)
    base = ["--endpoints", etcd_endpoints, "--env", unique, "config"]
    assert main([*base, "put", key, str(doc)]) == 1
    err = capsys.readouterr().err
    assert f"field '{field}'" in err
    assert "nothing was written" in err
    with coord.connect(etcd_endpoints, env=unique) as p:
        assert p.config.get(key) is None


def test_put_never_echoes_a_secret_of_a_rejected_document(
    etcd_endpoints: str, unique: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = tmp_path / "redis.yaml"
    doc.write_text("address: redis://app:s3cret-pw@cache:6379/0\npassword: [not, a, string]\n")
    code = main(
        ["--endpoints", etcd_endpoints, "--env", unique, "config", "put", "x/redis.yaml", str(doc)]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert "password" in err
    assert "s3cret-pw" not in err


def test_version_and_endpoint_errors(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith("im-infra-coord ")
    monkeypatch.delenv("IM_INFRA_ETCD_ENDPOINTS", raising=False)
    assert main(["config", "list"]) == 1
    err = capsys.readouterr().err
    assert "--endpoints" in err
    assert "endpoints=" not in err


def test_a_refused_port_fails_in_under_a_second(capsys: pytest.CaptureFixture[str]) -> None:
    from im_infra_testsupport.backends import free_port

    port = free_port()
    started = time.monotonic()
    assert main(["--endpoints", f"127.0.0.1:{port}", "config", "get", "global/kafka.yaml"]) == 1
    assert time.monotonic() - started < 1.0
    err = capsys.readouterr().err
    assert f"127.0.0.1:{port}" in err
    assert "--endpoints" in err


def test_watch_exits_1_when_etcd_stays_unreachable(
    etcd_endpoints: str,
    unique: str,
    tcp_proxy: Callable[[str], TcpProxy],
    capsys: pytest.CaptureFixture[str],
) -> None:
    proxy = tcp_proxy(etcd_endpoints.split(",")[0])
    codes: list[int] = []
    argv = [
        "--endpoints",
        proxy.endpoint,
        "--env",
        unique,
        "--timeout",
        "1",
        "config",
        "watch",
        "global/",
        "--prefix",
    ]
    t = threading.Thread(target=lambda: codes.append(main(argv)))
    t.start()
    deadline = time.monotonic() + 5
    while "watching" not in capsys.readouterr().err and time.monotonic() < deadline:
        time.sleep(0.05)
    proxy.cut()
    cut_at = time.monotonic()
    t.join(15)
    assert codes == [1]
    assert time.monotonic() - cut_at < 6
    assert "unreachable" in capsys.readouterr().err
