from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, Field

from im_infra import coord
from im_infra.coord import ConfigError, CoordUnavailable, load_component_config


class Redis(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid")
    addr: str = "localhost:6379"
    pool_size: int = Field(10, alias="poolSize")
    db: int = 0


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IM_INFRA_CONFIG_DIR", raising=False)
    monkeypatch.delenv("IM_INFRA_ENV", raising=False)


def test_defaults_and_overrides_without_dir() -> None:
    cfg = load_component_config("redis", Redis, service="im-logic", overrides={"db": 3})
    assert cfg == Redis.model_validate({"addr": "localhost:6379", "poolSize": 10, "db": 3})


def test_local_dir_global_then_service_then_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "global" / "redis.yaml", "addr: redis:6379\npoolSize: 50\ndb: 1\n")
    write(tmp_path / "im-logic" / "redis.yaml", "poolSize: 70\n")
    write(tmp_path / "redis.yaml", "addr: ignored-when-global-exists\n")
    monkeypatch.setenv("IM_INFRA_CONFIG_DIR", str(tmp_path))
    cfg = load_component_config("redis", Redis, service="im-logic", overrides={"pool_size": 99})
    assert (cfg.addr, cfg.pool_size, cfg.db) == ("redis:6379", 99, 1)
    other = load_component_config("redis", Redis, service="im-push")
    assert (other.addr, other.pool_size) == ("redis:6379", 50)


def test_local_dir_plain_component_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "redis.yaml", "addr: plain:1\n")
    monkeypatch.setenv("IM_INFRA_CONFIG_DIR", str(tmp_path))
    assert load_component_config("redis", Redis, service="svc").addr == "plain:1"


def test_bad_local_file_names_file_field_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "svc" / "redis.yaml", "poolSize: many\n")
    monkeypatch.setenv("IM_INFRA_CONFIG_DIR", str(tmp_path))
    with pytest.raises(ConfigError) as info:
        load_component_config("redis", Redis, service="svc")
    msg = str(info.value)
    assert str(tmp_path / "svc" / "redis.yaml") in msg
    assert "poolSize" in msg
    assert "integer" in msg


def test_unknown_field_rejected_when_model_forbids(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "redis.yaml", "adress: typo\n")
    monkeypatch.setenv("IM_INFRA_CONFIG_DIR", str(tmp_path))
    with pytest.raises(ConfigError, match="adress"):
        load_component_config("redis", Redis, service="svc")


def test_malformed_local_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "global" / "redis.yaml", "addr: [oops\n")
    monkeypatch.setenv("IM_INFRA_CONFIG_DIR", str(tmp_path))
    with pytest.raises(ConfigError, match=r"global/redis\.yaml is malformed"):
        load_component_config("redis", Redis, service="svc")


def test_config_dir_must_exist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IM_INFRA_CONFIG_DIR", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="is not a directory"):
        load_component_config("redis", Redis, service="svc")


def test_invalid_names_rejected() -> None:
    with pytest.raises(ConfigError, match="component"):
        load_component_config("../redis", Redis, service="svc")
    with pytest.raises(ConfigError, match="service"):
        load_component_config("redis", Redis, service="a/b")


class _Entry:
    def __init__(self, value: bytes) -> None:
        self.value = value


class _FakeConfig:
    """Stands in for the config manager; records the keys asked for."""

    def __init__(self, docs: dict[str, bytes] | None, fail: bool = False, env: str = "dev") -> None:
        self.env = env
        self.service: str | None = None
        self.docs = docs or {}
        self.fail = fail
        self.asked: list[str] = []

    def get(self, key: str) -> _Entry | None:
        self.asked.append(key)
        if self.fail:
            raise CoordUnavailable("etcd get: no endpoint answered")
        raw = self.docs.get(key)
        return None if raw is None else _Entry(raw)


class _FakeProvider:
    def __init__(self, config: _FakeConfig) -> None:
        self.config = config


def test_provider_documents_use_env_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IM_INFRA_ENV", "prod")
    fake = _FakeConfig(
        {
            "/im-infra/config/prod/global/redis.yaml": b"addr: g:1\npoolSize: 5\n",
            "/im-infra/config/prod/svc/redis.yaml": b"poolSize: 6\n",
        },
        env="prod",
    )
    provider: Any = _FakeProvider(fake)
    cfg = load_component_config("redis", Redis, service="svc", coord=provider)
    assert (cfg.addr, cfg.pool_size) == ("g:1", 6)
    assert fake.asked == [
        "/im-infra/config/prod/global/redis.yaml",
        "/im-infra/config/prod/svc/redis.yaml",
    ]


def test_provider_env_wins_over_process_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """A provider connected with env="staging" reads staging's documents, whatever
    IM_INFRA_ENV says; an explicit env= still wins over both."""
    monkeypatch.setenv("IM_INFRA_ENV", "prod")
    fake = _FakeConfig(
        {"/im-infra/config/staging/global/redis.yaml": b"addr: s:1\n"}, env="staging"
    )
    provider: Any = _FakeProvider(fake)
    assert load_component_config("redis", Redis, service="svc", coord=provider).addr == "s:1"
    load_component_config("redis", Redis, service="svc", coord=provider, env="qa")
    assert fake.asked[-1] == "/im-infra/config/qa/svc/redis.yaml"


@pytest.mark.parametrize("field", ["password", "dsn", "api_token"])
def test_secret_values_are_not_echoed_in_errors(field: str) -> None:
    class Secretive(BaseModel):
        model_config = ConfigDict(extra="forbid")
        password: int = 0
        dsn: int = 0
        api_token: int = 0

    fake = _FakeConfig({"/im-infra/config/dev/global/s.yaml": f"{field}: hunter2\n".encode()})
    provider: Any = _FakeProvider(fake)
    with pytest.raises(ConfigError, match=field) as info:
        load_component_config("s", Secretive, service="svc", coord=provider)
    assert "hunter2" not in str(info.value)
    assert "***" in str(info.value)


def test_non_secret_values_are_echoed_in_errors() -> None:
    fake = _FakeConfig({"/im-infra/config/dev/global/redis.yaml": b"db: many\n"})
    provider: Any = _FakeProvider(fake)
    with pytest.raises(ConfigError, match="'many'"):
        load_component_config("redis", Redis, service="svc", coord=provider)


def test_unreachable_provider_falls_back_to_local_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "redis.yaml", "addr: local:1\n")
    monkeypatch.setenv("IM_INFRA_CONFIG_DIR", str(tmp_path))
    provider: Any = _FakeProvider(_FakeConfig(None, fail=True))
    cfg = load_component_config("redis", Redis, service="svc", coord=provider, env="qa")
    assert cfg.addr == "local:1"


def test_public_api_exports() -> None:
    for name in coord.__all__:
        assert hasattr(coord, name), name
    assert issubclass(coord.LockLost, coord.CoordError)
    assert issubclass(coord.ConfigError, coord.CoordError)
