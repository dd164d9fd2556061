"""Drivers are extras: a provider whose driver module cannot be imported fails with a typed
error naming the extra that installs it (the import is blocked in ``sys.modules``, which is how
Python behaves when the package is absent)."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

import pytest

from im_infra import db

PACKAGE = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("config", "is_async", "module", "extra"),
    [
        ({"driver": "postgresql", "database": "d"}, False, "psycopg", "postgresql"),
        ({"driver": "postgresql", "database": "d"}, True, "psycopg", "postgresql"),
        ({"driver": "mysql", "database": "d"}, False, "pymysql", "mysql"),
        ({"driver": "mariadb", "database": "d"}, True, "aiomysql", "mysql"),
        ({"driver": "sqlite"}, True, "aiosqlite", "sqlite"),
        ({"dsn": "postgresql+psycopg://u:hunter2@h/d"}, False, "psycopg", "postgresql"),
    ],
)
def test_missing_driver_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
    config: dict[str, str],
    is_async: bool,
    module: str,
    extra: str,
) -> None:
    monkeypatch.setitem(sys.modules, module, None)
    cls = db.AsyncDBProvider if is_async else db.DBProvider
    with pytest.raises(db.DriverNotInstalledError) as info:
        cls(db.DBConfig.model_validate(config))
    assert info.value.extra == extra
    assert f"im-infra-db[{extra}]" in str(info.value)
    assert module in str(info.value)
    assert "hunter2" not in str(info.value)
    assert isinstance(info.value, db.ConfigError)  # one except for every config problem


def test_driver_without_an_extra_says_which_module_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "pg8000", None)
    with pytest.raises(db.InvalidURLError) as info:
        db.DBProvider(db.DBConfig(dsn="postgresql+pg8000://u@h/d"))  # type: ignore[arg-type]
    assert not isinstance(info.value, db.DriverNotInstalledError)
    assert "pg8000" in str(info.value)


def test_the_package_installs_no_driver_and_each_extra_brings_both() -> None:
    meta = tomllib.loads((PACKAGE / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    names = " ".join(meta["dependencies"]).lower()
    for driver in ("psycopg", "pymysql", "aiomysql", "aiosqlite"):
        assert driver not in names
    extras = {k: " ".join(v).lower() for k, v in meta["optional-dependencies"].items()}
    assert "psycopg" in extras["postgresql"]
    assert "pymysql" in extras["mysql"] and "aiomysql" in extras["mysql"]
    assert "aiosqlite" in extras["sqlite"]
