"""From DBConfig to engine URL, driver, connect args and pool arguments."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from im_infra.db import DBConfig, InvalidURLError
from im_infra.db._internal.engine import build_spec

SECRET = "Zq-spec-secret-33"


@pytest.mark.parametrize(
    ("driver", "is_async", "drivername", "port"),
    [
        ("mysql", False, "mysql+pymysql", 3306),
        ("mysql", True, "mysql+aiomysql", 3306),
        ("mariadb", False, "mariadb+pymysql", 3306),
        ("postgresql", False, "postgresql+psycopg", 5432),
        ("postgresql", True, "postgresql+psycopg", 5432),
    ],
)
def test_driver_choice(driver: str, is_async: bool, drivername: str, port: int) -> None:
    cfg = DBConfig(driver=driver, host="db.local", user="u", password=SECRET, database="im")  # type: ignore[arg-type]
    spec = build_spec(cfg, is_async=is_async)
    assert spec.url.drivername == drivername
    assert spec.url.port == port
    assert spec.url.password == SECRET
    assert SECRET not in repr(spec.url)
    assert spec.target.server == f"{driver} db.local:{port}"


def test_sqlite_urls(tmp_path: Path) -> None:
    path = str(tmp_path / "x.db")
    sync = build_spec(DBConfig(driver="sqlite", database=path), is_async=False)
    aio = build_spec(DBConfig(driver="sqlite", database=path), is_async=True)
    assert sync.url.drivername == "sqlite+pysqlite"
    assert aio.url.drivername == "sqlite+aiosqlite"
    assert sync.url.database == path
    assert sync.target.server == f"sqlite {path}"
    assert sync.kwargs["pool_size"] == 10
    memory = build_spec(DBConfig(driver="sqlite"), is_async=False)
    assert "pool_size" not in memory.kwargs  # SQLite's in-memory pools take no size
    assert memory.target.server == "sqlite :memory:"


@pytest.mark.parametrize(
    ("dsn", "is_async", "drivername"),
    [
        ("postgresql://u:p@h/d", False, "postgresql+psycopg"),
        ("postgresql://u:p@h/d", True, "postgresql+psycopg"),
        ("mysql+pymysql://u:p@h/d", True, "mysql+aiomysql"),
        ("mysql://u:p@h/d", False, "mysql+pymysql"),
        ("mysql+aiomysql://u:p@h/d", True, "mysql+aiomysql"),
        ("sqlite:///x.db", True, "sqlite+aiosqlite"),
        ("mariadb+pymysql://u:p@h/d", False, "mariadb+pymysql"),
    ],
)
def test_dsn_driver_adaptation(dsn: str, is_async: bool, drivername: str) -> None:
    spec = build_spec(DBConfig(dsn=dsn), is_async=is_async)  # type: ignore[arg-type]
    assert spec.url.drivername == drivername


@pytest.mark.parametrize(
    "dsn",
    [f"postgresql://u:{SECRET}@host:notaport/db", f"oracle://u:{SECRET}@h/d", "::::"],
)
def test_bad_dsn_is_invalid_url_without_password(dsn: str) -> None:
    with pytest.raises(InvalidURLError) as info:
        build_spec(DBConfig(dsn=dsn), is_async=False)  # type: ignore[arg-type]
    assert SECRET not in str(info.value)
    assert info.value.__cause__ is None


def test_common_engine_arguments() -> None:
    cfg = DBConfig(
        driver="mysql",
        pool_size=3,
        max_overflow=4,
        pool_recycle=0,
        pool_pre_ping=False,
        pool_timeout=7,
    )
    kwargs = build_spec(cfg, is_async=False).kwargs
    assert kwargs["hide_parameters"] is True
    assert kwargs["pool_size"] == 3
    assert kwargs["max_overflow"] == 4
    assert kwargs["pool_recycle"] == -1
    assert kwargs["pool_pre_ping"] is False
    assert kwargs["pool_timeout"] == 7


def test_postgresql_connect_args() -> None:
    cfg = DBConfig(
        driver="postgresql",
        connect_timeout=0.5,
        statement_timeout=1.25,
        tls={"enabled": True, "caFile": "/ca.pem", "certFile": "/c.pem", "keyFile": "/k.pem"},  # type: ignore[arg-type]
        params={"options": "-c search_path=im"},
    )
    args = build_spec(cfg, is_async=False).kwargs["connect_args"]
    assert args["connect_timeout"] == 2
    assert args["options"] == "-c search_path=im -c statement_timeout=1250"
    assert args["sslmode"] == "verify-full"
    assert args["sslrootcert"] == "/ca.pem"
    assert args["sslcert"] == "/c.pem"
    assert args["sslkey"] == "/k.pem"
    no_verify = DBConfig(driver="postgresql", tls={"enabled": True, "verify": False})  # type: ignore[arg-type]
    assert build_spec(no_verify, is_async=True).kwargs["connect_args"]["sslmode"] == "require"
    plain = build_spec(DBConfig(driver="postgresql"), is_async=False).kwargs["connect_args"]
    assert "sslmode" not in plain
    assert "options" not in plain


def test_mysql_connect_args_and_tls_context() -> None:
    cfg = DBConfig(driver="mysql", connect_timeout=1.5, tls={"enabled": True, "verify": False})  # type: ignore[arg-type]
    args = build_spec(cfg, is_async=True).kwargs["connect_args"]
    assert args["connect_timeout"] == 1.5
    context = args["ssl"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_NONE
    verified = build_spec(DBConfig(driver="mysql", tls={"enabled": True}), is_async=False)  # type: ignore[arg-type]
    assert verified.kwargs["connect_args"]["ssl"].check_hostname is True


def test_sqlite_connect_args() -> None:
    args = build_spec(DBConfig(driver="sqlite", connect_timeout=3), is_async=False).kwargs
    assert args["connect_args"] == {"timeout": 3.0}


class _FakeCursor:
    def __init__(self, log: list[str], unknown: str) -> None:
        self.log = log
        self.unknown = unknown

    def execute(self, statement: str) -> None:
        if self.unknown in statement:
            raise RuntimeError(f"(1193) Unknown system variable '{self.unknown}'")
        self.log.append(statement)

    def close(self) -> None:
        pass


class _FakeConnection:
    def __init__(self, log: list[str], unknown: str) -> None:
        self.log = log
        self.unknown = unknown

    def cursor(self) -> _FakeCursor:
        return _FakeCursor(self.log, self.unknown)


@pytest.mark.parametrize(
    ("unknown", "expected"),
    [
        ("max_statement_time", "SET SESSION max_execution_time=1500"),  # MySQL
        ("max_execution_time", "SET SESSION max_statement_time=1.500"),  # MariaDB
    ],
)
def test_mysql_statement_timeout_picks_the_servers_variable(unknown: str, expected: str) -> None:
    from im_infra.db import DBProvider

    with DBProvider(DBConfig(driver="mysql", statement_timeout=1.5)) as provider:
        hooks = [
            fn
            for fn in provider.engine.pool.dispatch.connect
            if "_mysql_statement_timeout" in getattr(fn, "__qualname__", "")
        ]
        assert len(hooks) == 1
        executed: list[str] = []
        for _ in range(3):  # the first connection probes; later ones reuse the answer
            hooks[0](_FakeConnection(executed, unknown), None)
        assert executed == [expected] * 3
