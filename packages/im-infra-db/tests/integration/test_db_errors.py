"""Connection errors as typed DBErrors naming the server; the password never shows."""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from im_infra import clog, db
from im_infra_testsupport.backends import free_port

from .conftest import SERVER_BACKENDS, LogLines

pytestmark = pytest.mark.integration

SECRET = "Pw-integ-9f3K-never-shown"


def _fields(url: str, **changes: Any) -> dict[str, Any]:
    parsed = make_url(url)
    fields: dict[str, Any] = {
        "driver": parsed.get_backend_name(),
        "host": parsed.host,
        "port": parsed.port,
        "user": parsed.username or "",
        "database": parsed.database or "",
        "connect_timeout": 3,
    }
    fields.update(changes)
    return fields


def _ping_error(fields: dict[str, Any]) -> db.DBError:
    with db.new("it-db", **fields) as provider, pytest.raises(db.DBError) as info:
        provider.ping()
    return info.value


async def _aping_error(fields: dict[str, Any]) -> db.DBError:
    async with db.new_async("it-db", **fields) as provider:
        with pytest.raises(db.DBError) as info:
            await provider.ping()
    return info.value


def _assert_no_secret(error: BaseException, lines: LogLines) -> None:
    rendered = "".join(traceback.format_exception(error))
    assert SECRET not in rendered
    assert SECRET not in repr(error)
    assert SECRET not in str(lines())


Case = Callable[[str], dict[str, Any]]
CASES: dict[str, tuple[Case, type[db.DBError], str]] = {
    "unreachable": (
        lambda url: _fields(url, port=free_port(), password=SECRET),
        db.ServerUnreachableError,
        "cannot reach",
    ),
    "auth": (
        # MariaDB: root with a wrong password; PostgreSQL (trust auth here): an unknown role.
        lambda url: _fields(
            url,
            password=SECRET,
            user="root" if url.startswith("mysql") else "im_no_such_role",
        ),
        db.AuthenticationError,
        "authentication failed",
    ),
    "unknown-db": (
        lambda url: _fields(url, database="im_no_such_db", password=""),
        db.UnknownDatabaseError,
        "im_no_such_db",
    ),
}


@pytest.mark.parametrize("backend", SERVER_BACKENDS, indirect=True)
@pytest.mark.parametrize("case", sorted(CASES))
def test_connection_errors(case: str, db_url: str, log_lines: LogLines) -> None:
    make, expected, needle = CASES[case]
    fields = make(db_url)
    with clog.trace_context("trace-err"):
        error = _ping_error(fields)
    assert type(error) is expected
    assert needle in str(error)
    assert f"{fields['host']}:{fields['port']}" in str(error)
    assert error.server is not None
    _assert_no_secret(error, log_lines)
    lines = log_lines()
    assert [line for line in lines if line["level"] in ("error", "critical")] == []
    logged = [line for line in lines if line.get("error_type") == expected.__name__]
    assert logged
    assert logged[-1]["level"] == "debug"  # raised to the caller: not also an error line
    assert logged[-1]["trace_id"] == "trace-err"
    assert logged[-1]["error_type"] == expected.__name__


@pytest.mark.parametrize("backend", SERVER_BACKENDS, indirect=True)
@pytest.mark.parametrize("case", sorted(CASES))
async def test_async_connection_errors(case: str, db_url: str, log_lines: LogLines) -> None:
    make, expected, needle = CASES[case]
    fields = make(db_url)
    error = await _aping_error(fields)
    assert type(error) is expected
    assert needle in str(error)
    _assert_no_secret(error, log_lines)


def test_bad_urls(log_lines: LogLines) -> None:
    for dsn in (f"postgresql://u:{SECRET}@h:port/db", f"nosuchdb://u:{SECRET}@h/db"):
        with pytest.raises(db.InvalidURLError) as info:
            db.new("it-db", dsn=dsn)
        _assert_no_secret(info.value, log_lines)
    with pytest.raises(db.InvalidURLError, match="nodriver"):
        db.new("it-db", dsn=f"mysql+nodriver://u:{SECRET}@h/db")


@pytest.mark.parametrize("backend", SERVER_BACKENDS, indirect=True)
def test_statement_timeout(backend: str, db_url: str) -> None:
    sleep = "SELECT pg_sleep(3)" if backend == "postgresql" else "SELECT SLEEP(3)"
    with db.new("it-db", dsn=db_url, statement_timeout="300ms") as provider:
        with (
            pytest.raises(db.StatementTimeoutError, match="statement timeout"),
            provider.session() as s,
        ):
            s.execute(text(sleep))
        with provider.session() as s:  # the connection is still usable
            assert s.execute(text("SELECT 1")).scalar_one() == 1


@pytest.mark.parametrize("backend", SERVER_BACKENDS, indirect=True)
async def test_async_statement_timeout(backend: str, db_url: str) -> None:
    sleep = "SELECT pg_sleep(3)" if backend == "postgresql" else "SELECT SLEEP(3)"
    async with db.new_async("it-db", dsn=db_url, statement_timeout=0.3) as provider:
        with pytest.raises(db.StatementTimeoutError):
            async with provider.session() as s:
                await s.execute(text(sleep))


@pytest.mark.parametrize("backend", SERVER_BACKENDS, indirect=True)
def test_slow_query_logged_with_trace_id(backend: str, db_url: str, log_lines: LogLines) -> None:
    sleep = "SELECT pg_sleep(0.25)" if backend == "postgresql" else "SELECT SLEEP(0.25)"
    with (
        db.new("it-db", dsn=db_url, slow_threshold="100ms") as provider,
        clog.trace_context("trace-slow-it"),
        provider.session() as s,
    ):
        s.execute(text(sleep))
        s.execute(text("SELECT 1"))
    slow = [line for line in log_lines() if line["msg"] == "slow query"]
    assert len(slow) == 1
    assert slow[0]["trace_id"] == "trace-slow-it"
    assert slow[0]["sql"] == sleep
    assert slow[0]["elapsed_ms"] >= 200
    assert slow[0]["db"].startswith(backend)


@pytest.mark.parametrize("backend", SERVER_BACKENDS, indirect=True)
async def test_tls_required_but_not_offered(db_url: str) -> None:
    """The devstack servers have TLS off: requiring it must fail, never fall back to plaintext
    (aiomysql alone would silently stay unencrypted; the provider checks Ssl_cipher)."""
    tls = {"enabled": True, "verify": False}
    with db.new("it-db", dsn=db_url, tls=tls) as provider, pytest.raises(db.TLSError) as info:
        provider.ping()
    assert "127.0.0.1" in str(info.value)
    async with db.new_async("it-db", dsn=db_url, tls=tls) as aprovider:
        with pytest.raises(db.TLSError, match="TLS"):
            await aprovider.ping()
