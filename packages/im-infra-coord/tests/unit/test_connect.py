from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from im_infra import coord
from im_infra.coord import ConfigError
from im_infra.coord._internal.etcd import parse_endpoint
from im_infra.coord._internal.model import prefix_end
from im_infra.coord.cli import main


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("127.0.0.1:2379", ("127.0.0.1:2379", False)),
        (" etcd-1:2379 ", ("etcd-1:2379", False)),
        ("http://etcd:2380", ("etcd:2380", False)),
        ("https://etcd", ("etcd:2379", True)),
        ("https://[::1]:2379", ("[::1]:2379", True)),
    ],
)
def test_parse_endpoint(spec: str, expected: tuple[str, bool]) -> None:
    assert parse_endpoint(spec) == expected


@pytest.mark.parametrize("spec", ["", "etcd", "etcd:", "etcd:port", "etcd:70000", "ftp://x:1"])
def test_parse_endpoint_rejects(spec: str) -> None:
    with pytest.raises(ConfigError, match="endpoint"):
        parse_endpoint(spec)


def test_prefix_end() -> None:
    assert prefix_end("/a/") == b"/a0"
    assert prefix_end("a\xff") != b""


def test_connect_needs_endpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IM_INFRA_ETCD_ENDPOINTS", raising=False)
    with pytest.raises(ConfigError, match="IM_INFRA_ETCD_ENDPOINTS"):
        coord.connect()
    with pytest.raises(ConfigError, match="empty"):
        coord.connect(" , ")


def test_connect_rejects_half_credentials_and_tls(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="username and password"):
        coord.connect("127.0.0.1:1", username="root", password=None)
    with pytest.raises(ConfigError, match="together"):
        coord.connect("127.0.0.1:1", cert_cert=str(tmp_path / "c.pem"))
    missing = tmp_path / "ca.pem"
    with pytest.raises(ConfigError, match=str(missing)):
        coord.connect("127.0.0.1:1", ca_cert=str(missing))


def test_connect_is_lazy_and_reads_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IM_INFRA_ETCD_ENDPOINTS", "127.0.0.1:1,127.0.0.1:2")
    monkeypatch.setenv("IM_INFRA_SERVICE", "svc-a")
    with coord.connect(timeout=0.5) as p:
        assert p.endpoints == ["127.0.0.1:1", "127.0.0.1:2"]
        assert p.service == "svc-a"
        assert isinstance(p, coord.Provider)
        assert isinstance(p.registry, coord.ServiceRegistry)
        assert isinstance(p.config, coord.ConfigManager)
        assert isinstance(p.lock, coord.Locker)
        assert isinstance(p.instance, coord.Instancer)
    p.close()  # idempotent
    with pytest.raises(ConfigError, match="closed"):
        _ = p.config


def test_instancer_protocol_includes_current_id() -> None:
    class WithoutCurrentId:
        def instance_id(self) -> int:
            return 1

        def on_lost(self, callback: Callable[[int], None]) -> None: ...

        def release(self) -> None: ...

    class WithCurrentId(WithoutCurrentId):
        current_id: int | None = None

    assert not isinstance(WithoutCurrentId(), coord.Instancer)
    assert isinstance(WithCurrentId(), coord.Instancer)
    with coord.connect("127.0.0.1:1", service="svc-a", timeout=0.5) as p:
        assert p.instance.current_id is None  # nothing allocated, no I/O


def test_instance_needs_service(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IM_INFRA_SERVICE", raising=False)
    with (
        coord.connect("127.0.0.1:1") as p,
        pytest.raises(ConfigError, match="service"),
    ):
        _ = p.instance


def test_cli_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["config", "frobnicate"])
    assert info.value.code == 2


def test_cli_put_rejects_malformed_yaml_before_connecting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "kafka.yaml"
    bad.write_text("brokers: [a,\n")
    # port 1 refuses connections: the document is rejected before any etcd call
    code = main(["--endpoints", "127.0.0.1:1", "config", "put", "global/kafka.yaml", str(bad)])
    assert code == 1
    assert "global/kafka.yaml is malformed" in capsys.readouterr().err


def test_cli_missing_file(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--endpoints", "127.0.0.1:1", "config", "put", "k.yaml", "/nonexistent/k.yaml"])
    assert code == 1
    assert "/nonexistent/k.yaml" in capsys.readouterr().err
