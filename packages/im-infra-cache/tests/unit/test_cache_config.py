"""RedisConfig parsing and the factory's configuration path (no server needed)."""

from __future__ import annotations

import socket
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from pydantic import ValidationError

from im_infra import cache, coord
from im_infra.cache import CacheConfigError, RedisConfig
from im_infra.cache._internal.backend import SYNC, build_client
from im_infra.cache._internal.lifo import LifoQueue
from im_infra.cache._internal.retry import SAFE


def test_defaults_follow_the_seed() -> None:
    cfg = RedisConfig()
    assert cfg.mode == "single"
    assert cfg.address == "127.0.0.1:6379"
    assert cfg.db == 0
    assert cfg.connect_timeout == 5.0
    assert cfg.read_timeout == 3.0
    assert cfg.retry.max_retries == 3
    assert cfg.prefix_for("im-logic") == "im-logic:"


def test_camel_and_snake_case_and_go_durations() -> None:
    cfg = RedisConfig.model_validate(
        {
            "keyPrefix": "prod:{service}:",
            "pool_size": 7,
            "readTimeout": "250ms",
            "connectTimeout": "2s",
            "retry": {"maxRetries": 1, "minBackoff": "1ms", "max_backoff": 0.1},
        }
    )
    assert cfg.prefix_for("svc") == "prod:svc:"
    assert cfg.pool_size == 7
    assert cfg.read_timeout == pytest.approx(0.25)
    assert cfg.connect_timeout == 2.0
    assert cfg.retry.max_retries == 1
    assert cfg.retry.min_backoff == pytest.approx(0.001)


def test_durations_use_coords_shared_parser() -> None:
    cfg = RedisConfig.model_validate(
        {
            "readTimeout": "1m30s",
            "connectTimeout": " 5 s ",
            "healthCheckInterval": "30s",
            "retry": {"minBackoff": "2", "maxBackoff": timedelta(milliseconds=300)},
        }
    )
    assert cfg.read_timeout == 90.0
    assert cfg.connect_timeout == 5.0
    assert cfg.health_check_interval == 30.0
    assert cfg.retry.min_backoff == 2.0
    assert cfg.retry.max_backoff == pytest.approx(0.3)
    assert cache.config.parse_duration is coord.parse_duration


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("0s", "greater than 0"),
        ("-1s", "greater than"),
        ("3 fortnights", "unknown unit"),
        (True, "boolean"),
    ],
)
def test_bad_durations_are_rejected(raw: object, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        RedisConfig.model_validate({"readTimeout": raw})


def test_url_address_fills_credentials_db_and_tls() -> None:
    cfg = RedisConfig(address="rediss://app:s%40cret@redis.local:6380/3")
    assert cfg.address == "redis.local:6380"
    assert cfg.username == "app"
    assert cfg.password is not None
    assert cfg.password.get_secret_value() == "s@cret"
    assert cfg.db == 3
    assert cfg.tls.enabled
    assert "s@cret" not in repr(cfg)


def test_explicit_fields_win_over_the_url() -> None:
    cfg = RedisConfig.model_validate({"address": "redis://u:p@h:1/2", "db": 5})
    assert cfg.db == 5
    assert cfg.username == "u"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"address": "no-port"}, "address"),
        ({"mode": "ring"}, "mode"),
        ({"readTimeout": "fast"}, "readTimeout"),
        ({"pool_size": 0}, "poolSize"),
        ({"mode": "cluster", "db": 2}, "db"),
        ({"bogus": 1}, "bogus"),
    ],
)
def test_bad_config_is_a_typed_error_naming_the_field(
    overrides: dict[str, Any], field: str
) -> None:
    with pytest.raises(CacheConfigError) as info:
        cache.new("svc", **overrides)
    assert field in str(info.value)
    assert isinstance(info.value, cache.CacheError)


def test_password_never_in_a_config_error() -> None:
    with pytest.raises(CacheConfigError) as info:
        cache.new("svc", password="hunter2-secret", pool_size=-1)
    assert "hunter2-secret" not in str(info.value)


@pytest.mark.parametrize(
    "doc",
    [
        "address: redis://app:hunter2-secret@cache:6379/0\naddresses: ['no-port']\n",
        "address: redis://app:hunter2-secret@cache:6379/0\nmode: cluster\ndb: 3\n",
        "address: redis://:hunter2-secret@cache:notaport/0\n",
        "address: redis://app:hunter2-secret@cache:6379/0\npoolsize: 3\n",
        "serializer: redis://app:hunter2-secret@cache:6379/0\n",  # echoed value, URL masked
    ],
)
def test_url_credentials_never_in_a_config_error(
    doc: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "redis.yaml").write_text(doc)
    monkeypatch.setenv("IM_INFRA_CONFIG_DIR", str(tmp_path))
    with pytest.raises(CacheConfigError) as info:
        cache.load_config("svc")
    assert "hunter2-secret" not in str(info.value)
    assert isinstance(info.value, coord.ConfigError)


def test_redis_url_variable_and_field_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IM_INFRA_REDIS_URL", "redis://u:pw-123@10.2.2.2:7001/5")
    monkeypatch.setenv("IM_INFRA_REDIS_KEY_PREFIX", "env:{service}:")
    cfg = cache.load_config("svc")
    assert (cfg.address, cfg.db, cfg.username, cfg.key_prefix) == (
        "10.2.2.2:7001",
        5,
        "u",
        "env:{service}:",
    )
    assert cfg.password is not None and cfg.password.get_secret_value() == "pw-123"
    assert cache.load_config("svc", overrides={"db": 1}).db == 1  # code wins


def test_coord_provider_keyword_is_a_deprecated_alias() -> None:
    class Fake:
        service = None

        class config:  # noqa: N801
            env = "dev"

            @staticmethod
            def get(key: str) -> None:
                return None

    fake: Any = Fake()
    with pytest.warns(DeprecationWarning, match="coord="):
        assert cache.load_config("svc", coord_provider=fake).db == 0


def test_empty_service_name_is_rejected() -> None:
    with pytest.raises(CacheConfigError):
        cache.new("")


def test_local_config_dir_documents_are_merged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "global").mkdir()
    (tmp_path / "global" / "redis.yaml").write_text("address: 10.1.1.1:7000\npoolSize: 9\n")
    (tmp_path / "svc").mkdir()
    (tmp_path / "svc" / "redis.yaml").write_text("keyPrefix: 'x:{service}:'\ndb: 2\n")
    monkeypatch.setenv("IM_INFRA_CONFIG_DIR", str(tmp_path))
    cfg = cache.load_config("svc", overrides={"db": 4})
    assert cfg.address == "10.1.1.1:7000"
    assert cfg.pool_size == 9
    assert cfg.db == 4
    c = cache.new("svc")
    assert c.key_prefix == "x:svc:"
    c.close()


def test_bad_document_names_the_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "redis.yaml").write_text("poolSize: many\n")
    monkeypatch.setenv("IM_INFRA_CONFIG_DIR", str(tmp_path))
    with pytest.raises(CacheConfigError, match="poolSize"):
        cache.new("svc")


def test_single_mode_client_has_bounded_blocking_pool_and_retries() -> None:
    cfg = RedisConfig(pool_size=4, read_timeout=0.5)
    client = build_client(cfg, SYNC)
    pool = client.connection_pool
    assert isinstance(pool, redis.BlockingConnectionPool)
    assert isinstance(pool.pool, LifoQueue)  # (the fast queue, _internal/lifo.py)
    assert pool.max_connections == 4
    assert pool.connection_kwargs["socket_timeout"] == 0.5
    retry = pool.connection_kwargs["retry"]
    assert retry.get_retries() == 0  # outside an operation marked safe to repeat
    token = SAFE.set(True)
    try:
        assert retry.get_retries() == 3
    finally:
        SAFE.reset(token)
    client.close()


def test_sentinel_mode_builds_a_sentinel_managed_client() -> None:
    c = cache.new(
        "svc", mode="sentinel", addresses=["127.0.0.1:26379"], master_name="mm", password="pw"
    )
    assert isinstance(c.redis.connection_pool, redis.sentinel.SentinelConnectionPool)
    assert c.redis.connection_pool.service_name == "mm"
    c.close()


def test_tls_settings_reach_the_connection() -> None:
    cfg = RedisConfig.model_validate({"tls": {"enabled": True, "insecureSkipVerify": True}})
    client = build_client(cfg, SYNC)
    kw = client.connection_pool.connection_kwargs
    assert issubclass(client.connection_pool.connection_class, redis.SSLConnection)
    assert kw["ssl_cert_reqs"] == "none"
    assert kw["ssl_check_hostname"] is False
    client.close()


def test_cluster_without_reachable_nodes_is_unavailable_at_creation() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    with pytest.raises(cache.CacheUnavailable, match="connect"):
        cache.new("svc", mode="cluster", addresses=[f"127.0.0.1:{port}"], password="pw-xyz")


def test_async_factory_returns_the_asyncio_cache() -> None:
    c = cache.new_async("svc", key_prefix="")
    assert isinstance(c, cache.AsyncRedisCache)
    assert isinstance(c, cache.AsyncCache)
    assert c.key_prefix == ""


def test_rediss_url_turns_tls_on_and_keeps_other_tls_fields() -> None:
    cfg = RedisConfig.model_validate({"address": "rediss://h:1", "tls": {"caCert": "/ca.pem"}})
    assert cfg.tls.enabled
    assert cfg.tls.ca_cert == "/ca.pem"
    with pytest.raises(ValueError, match=r"tls\.enabled"):
        RedisConfig.model_validate({"address": "rediss://h:1", "tls": {"enabled": False}})
