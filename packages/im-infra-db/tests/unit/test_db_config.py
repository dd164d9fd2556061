"""DBConfig: defaults, spellings, durations and validation errors (via coord's loader)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from im_infra import coord, db
from im_infra.coord import parse_duration
from im_infra.db import DBConfig

SECRET = "Zq-unit-secret-71"


def test_defaults_follow_the_seed() -> None:
    cfg = DBConfig()
    assert cfg.driver == "mysql"
    assert cfg.slow_threshold == pytest.approx(0.2)
    assert cfg.pool_pre_ping is True
    assert cfg.pool_size == 10
    assert cfg.statement_timeout == 0
    assert cfg.tls.enabled is False


def test_camel_and_snake_case_are_both_accepted() -> None:
    a = DBConfig.model_validate({"poolSize": 3, "slowThreshold": "50ms", "tls": {"caFile": "x"}})
    b = DBConfig(pool_size=3, slow_threshold=0.05, tls={"ca_file": "x"})  # type: ignore[arg-type]
    assert a == b


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [
        ("200ms", 0.2),
        ("1.5s", 1.5),
        ("1m30s", 90.0),
        ("1h", 3600.0),
        ("250us", 0.00025),
        ("2", 2.0),
        (3, 3.0),
        (0.25, 0.25),
        (timedelta(milliseconds=20), 0.02),
    ],
)
def test_durations(raw: str | float | timedelta, seconds: float) -> None:
    assert parse_duration(raw) == pytest.approx(seconds)


@pytest.mark.parametrize("raw", ["fast", "10 parsecs", "", "5x"])
def test_bad_durations_are_rejected(raw: str) -> None:
    with pytest.raises(ValidationError, match=r"slow_threshold|slowThreshold"):
        DBConfig(slow_threshold=raw)  # type: ignore[arg-type]


def test_negative_duration_is_rejected() -> None:
    with pytest.raises(ValidationError):
        DBConfig(pool_recycle="-1s")  # type: ignore[arg-type]


def test_driver_aliases() -> None:
    assert DBConfig(driver="postgres").driver == "postgresql"  # type: ignore[arg-type]
    assert DBConfig(driver="SQLite").driver == "sqlite"  # type: ignore[arg-type]


def test_host_required_except_for_sqlite_or_dsn() -> None:
    with pytest.raises(ValidationError, match="host is required"):
        DBConfig(driver="postgresql", host="")
    assert DBConfig(driver="sqlite", host="").host == ""
    assert DBConfig(dsn="sqlite://", host="").host == ""  # type: ignore[arg-type]


def test_numeric_password_is_accepted_as_text() -> None:
    cfg = DBConfig(password=123456)  # type: ignore[arg-type]
    assert cfg.password.get_secret_value() == "123456"


def test_secrets_do_not_show_in_repr() -> None:
    cfg = DBConfig(password=SECRET, dsn=f"mysql://u:{SECRET}@h/d")  # type: ignore[arg-type]
    assert SECRET not in repr(cfg)
    assert SECRET not in str(cfg)


def test_new_loads_overrides_and_reports_bad_fields_as_config_error() -> None:
    p = db.new("unit-svc", driver="sqlite", poolRecycle="1h")
    try:
        assert p.config.pool_recycle == 3600.0
    finally:
        p.close()
    with pytest.raises(db.ConfigError, match="poolSize") as info:
        db.new("unit-svc", driver="sqlite", pool_size="many", password=SECRET)
    assert isinstance(info.value, coord.ConfigError)
    assert SECRET not in str(info.value)


def test_unknown_field_is_rejected() -> None:
    with pytest.raises(db.ConfigError, match="bogus"):
        db.new("unit-svc", driver="sqlite", bogus=1)


def test_local_config_dir_documents(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "global").mkdir()
    (tmp_path / "svc-a").mkdir()
    (tmp_path / "global" / "db.yaml").write_text(
        "driver: sqlite\nslowThreshold: 300ms\npoolSize: 4\n", encoding="utf-8"
    )
    database = tmp_path / "a.db"
    (tmp_path / "svc-a" / "db.yaml").write_text(f"database: {database}\npoolSize: 6\n")
    monkeypatch.setenv("IM_INFRA_CONFIG_DIR", str(tmp_path))
    with db.new("svc-a", max_overflow=1) as p:
        assert p.config.driver == "sqlite"
        assert p.config.slow_threshold == pytest.approx(0.3)
        assert p.config.pool_size == 6
        assert p.config.max_overflow == 1
        assert p.config.database == str(database)


def test_bad_document_names_the_file_and_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "db.yaml").write_text(f"driver: sqlite\npassword: {SECRET}\npoolTimeout: soon\n")
    monkeypatch.setenv("IM_INFRA_CONFIG_DIR", str(tmp_path))
    with pytest.raises(db.ConfigError) as info:
        db.new("svc-b")
    message = str(info.value)
    assert "db.yaml" in message
    assert "poolTimeout" in message
    assert SECRET not in message


def test_password_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IM_INFRA_DB_PASSWORD", SECRET)
    with db.new("svc-c", driver="sqlite") as p:
        assert p.config.password.get_secret_value() == SECRET
    with db.new("svc-c", driver="sqlite", password="explicit") as p:
        assert p.config.password.get_secret_value() == "explicit"


def test_environment_password_fills_a_dsn_without_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IM_INFRA_DB_PASSWORD", SECRET)
    with db.new("svc-d", dsn="postgresql://im@db.local/im") as p:
        assert p.engine.url.password == SECRET
        assert SECRET not in repr(p.engine.url)
    with db.new("svc-d", dsn="postgresql://im:own@db.local/im") as p:
        assert p.engine.url.password == "own"


def test_server_database_without_a_name_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IM_INFRA_CONFIG_DIR", raising=False)
    with pytest.raises(db.ConfigError, match="field 'database' is empty"):
        db.new("svc", driver="postgresql", host="127.0.0.1")
    # SQLite without a name is an in-memory database; a dsn names its own database
    db.new("svc", driver="sqlite").close()
    db.new("svc", dsn="sqlite://").close()
