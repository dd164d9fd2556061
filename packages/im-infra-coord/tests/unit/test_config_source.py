"""coord's one config source, without servers: the environment layer and its naming rule,
precedence, required values, secret redaction, deprecated keywords and the default provider."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from im_infra import coord
from im_infra.coord._internal.redact import redact, secrets_in


class Tls(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    enabled: bool = False
    ca_file: str = Field(default="", alias="caFile")


class Svc(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    hosts: list[str] = Field(default_factory=list)
    pool_size: int = Field(default=1, alias="poolSize", gt=0)
    password: SecretStr = SecretStr("")
    url: str = ""
    tls: Tls = Field(default_factory=Tls)
    params: dict[str, str] = Field(default_factory=dict)


class SvcError(coord.ConfigError):
    pass


SPEC = coord.Component(
    "svcx",
    Svc,
    required={"hosts": "hosts=[...]"},
    env_aliases={"IM_INFRA_SVCX_URL_ALIAS": "url"},
    error=SvcError,
)


def test_naming_rule_lists_every_field() -> None:
    assert SPEC.variables() == [
        "IM_INFRA_SVCX_URL_ALIAS",
        "IM_INFRA_SVCX_HOSTS",
        "IM_INFRA_SVCX_POOL_SIZE",
        "IM_INFRA_SVCX_PASSWORD",
        "IM_INFRA_SVCX_URL",
        "IM_INFRA_SVCX_TLS__ENABLED",
        "IM_INFRA_SVCX_TLS__CA_FILE",
        "IM_INFRA_SVCX_PARAMS",
    ]


def test_precedence_defaults_documents_environment_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "global").mkdir()
    (tmp_path / "global" / "svcx.yaml").write_text("hosts: [g]\npoolSize: 2\ntls: {caFile: g}\n")
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "svcx.yaml").write_text("poolSize: 3\n")
    monkeypatch.setenv("IM_INFRA_CONFIG_DIR", str(tmp_path))
    cfg = coord.load_component_config(SPEC, service="a")
    assert (cfg.hosts, cfg.pool_size, cfg.tls.ca_file) == (["g"], 3, "g")
    monkeypatch.setenv("IM_INFRA_SVCX_POOL_SIZE", "4")
    monkeypatch.setenv("IM_INFRA_SVCX_TLS__ENABLED", "true")
    monkeypatch.setenv("IM_INFRA_SVCX_HOSTS", "e1, e2")
    monkeypatch.setenv("IM_INFRA_SVCX_PARAMS", "{a: b}")
    cfg = coord.load_component_config(SPEC, service="a")
    assert (cfg.pool_size, cfg.tls.enabled, cfg.hosts, cfg.params) == (
        4,
        True,
        ["e1", "e2"],
        {"a": "b"},
    )
    assert cfg.tls.ca_file == "g"  # deep merge: the document's sibling field stays
    cfg = coord.load_component_config(SPEC, service="a", overrides={"poolSize": 5})
    assert cfg.pool_size == 5


def test_alias_loses_to_the_canonical_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IM_INFRA_SVCX_HOSTS", "h")
    monkeypatch.setenv("IM_INFRA_SVCX_URL_ALIAS", "alias")
    assert coord.load_component_config(SPEC, service="a").url == "alias"
    monkeypatch.setenv("IM_INFRA_SVCX_URL", "canonical")
    assert coord.load_component_config(SPEC, service="a").url == "canonical"


def test_bad_environment_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IM_INFRA_SVCX_HOSTS", "h")
    monkeypatch.setenv("IM_INFRA_SVCX_POOL_SIZE", "lots")
    with pytest.raises(SvcError, match="environment variable IM_INFRA_SVCX_POOL_SIZE"):
        coord.load_component_config(SPEC, service="a")


def test_required_value_names_every_way_to_set_it() -> None:
    with pytest.raises(SvcError) as info:
        coord.load_component_config(SPEC, service="a")
    text = str(info.value)
    for part in ("'hosts'", "svcx.yaml", "IM_INFRA_SVCX_HOSTS", "hosts=[...]"):
        assert part in text
    assert isinstance(info.value, coord.ConfigError)


@pytest.mark.parametrize(
    "layer",
    [
        {"url": "redis://app:hunter2x@h:1/0", "poolSize": 0},
        {"password": "hunter2x", "poolSize": "many"},
        {"pasword": "hunter2x"},  # a misspelt secret field is not echoed either
        {"tls": {"caFile": 1, "enabled": "hunter2x"}, "password": "hunter2x"},
    ],
)
def test_no_secret_in_any_error(layer: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IM_INFRA_SVCX_HOSTS", "h")
    with pytest.raises(SvcError) as info:
        coord.load_component_config(SPEC, service="a", overrides=layer)
    assert "hunter2x" not in str(info.value)


def test_secret_from_the_environment_is_not_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IM_INFRA_SVCX_HOSTS", "h")
    monkeypatch.setenv("IM_INFRA_SVCX_PASSWORD", "hunter2x")
    monkeypatch.setenv("IM_INFRA_SVCX_URL", "redis://:hunter2x@h:1")
    with pytest.raises(SvcError) as info:
        coord.load_component_config(SPEC, service="a", overrides={"tls": {"x": "hunter2x"}})
    assert "hunter2x" not in str(info.value)


def test_redact_url_credentials_and_known_secrets() -> None:
    assert redact("at redis://u:p4ss@h:1/0 and mysql://:x@h") == (
        "at redis://u:***@h:1/0 and mysql://:***@h"
    )
    assert redact("token abcdef here", {"abcdef"}) == "token *** here"
    assert secrets_in({"db": {"password": 1234}, "dsn": "x", "u": "postgres://a:b9c@h"}) == {
        "1234",
        "x",
        "b9c",
    }


def test_deprecated_provider_keyword_warns(monkeypatch: pytest.MonkeyPatch) -> None:
    class Fake:
        service = None

        class config:  # noqa: N801
            env = "dev"

            @staticmethod
            def get(key: str) -> None:
                return None

    monkeypatch.setenv("IM_INFRA_SVCX_HOSTS", "h")
    with pytest.warns(DeprecationWarning, match="coord="):
        coord.load_component_config(SPEC, service="a", provider=Fake())  # type: ignore[arg-type]
    warned = pytest.warns(DeprecationWarning, match=r"f\(provider=")
    with pytest.raises(coord.ConfigError, match="once"), warned:
        coord.pick_provider(Fake(), where="f", provider=Fake())  # type: ignore[arg-type]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        coord.load_component_config(SPEC, service="a", coord=Fake())  # type: ignore[arg-type]


def test_default_provider_is_shared_and_lazy(monkeypatch: pytest.MonkeyPatch) -> None:
    assert coord.default_provider() is None  # no IM_INFRA_ETCD_ENDPOINTS: no config center
    monkeypatch.setenv("IM_INFRA_ETCD_ENDPOINTS", "127.0.0.1:1")  # never contacted here
    first = coord.default_provider()
    assert first is not None
    assert coord.default_provider() is first
    coord.close_default_provider()
    assert first.closed
    second = coord.default_provider()
    assert second is not None and second is not first


def test_service_name_comes_from_the_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SvcError, match="service name"):
        coord.load_component_config(SPEC)
    monkeypatch.setenv("IM_INFRA_SVCX_HOSTS", "h")

    class Fake:
        service = "from-provider"

        class config:  # noqa: N801
            env = "dev"
            asked: ClassVar[list[str]] = []

            @classmethod
            def get(cls, key: str) -> None:
                cls.asked.append(key)

    coord.load_component_config(SPEC, coord=Fake())  # type: ignore[arg-type]
    assert Fake.config.asked[-1] == "/im-infra/config/dev/from-provider/svcx.yaml"


def test_component_error_must_share_the_root() -> None:
    with pytest.raises(coord.ConfigError, match="subclass"):
        coord.Component("x", Svc, error=ValueError)  # type: ignore[arg-type]


class _Sink:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def write(self, s: str) -> int:
        self.lines.extend(line for line in s.splitlines() if line)
        return len(s)

    def flush(self) -> None:
        pass


def test_degradation_says_once_what_it_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from im_infra import clog

    sink = _Sink()
    clog.init("t", sink=sink, level="DEBUG")
    try:
        monkeypatch.setenv("IM_INFRA_SVCX_HOSTS", "h")
        for _ in range(3):
            coord.load_component_config(SPEC, service="degrade-a")
        infos = [ln for ln in sink.lines if "no config center configured" in ln]
        assert len(infos) == 1
        assert "built-in defaults" in infos[0]

        class Down:
            service = None

            class config:  # noqa: N801
                env = "dev"

                @staticmethod
                def get(key: str) -> None:
                    raise coord.CoordUnavailable("etcd get: no endpoint answered")

        (tmp_path / "svcx.yaml").write_text("poolSize: 9\n")
        monkeypatch.setenv("IM_INFRA_CONFIG_DIR", str(tmp_path))
        for _ in range(3):
            down: Any = Down()
            cfg = coord.load_component_config(SPEC, service="degrade-b", coord=down)
            assert cfg.pool_size == 9
        warnings_ = [ln for ln in sink.lines if "etcd unreachable" in ln]
        assert len(warnings_) == 1
        assert str(tmp_path) in warnings_[0]
        assert '"level":"warning"' in warnings_[0]
        assert '"level":"info"' in infos[0]
    finally:
        clog.shutdown()
