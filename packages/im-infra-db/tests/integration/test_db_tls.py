"""TLS to database servers that enforce it, with certificates made by the test (a throwaway CA).

Each backend runs its own server (``tls_servers``): PostgreSQL with ``hostssl`` lines only,
MariaDB with users ``REQUIRE SSL`` / ``REQUIRE X509``. The provider connects through its public
config fields (``tls.enabled/caFile/certFile/keyFile``; PostgreSQL uses ``sslmode=verify-full``).
A wrong CA and a host name the certificate does not name both fail with
:class:`db.TLSCertificateError`, a :class:`db.TLSError` / :class:`db.DBConnectionError`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pymysql  # type: ignore[import-untyped]
import pytest
from sqlalchemy import text

from im_infra import db
from im_infra_testsupport.tls_servers import MariaDBTLS, PostgresTLS, TLSFiles

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def pg_tls(tls_files: TLSFiles) -> Iterator[PostgresTLS]:
    server = PostgresTLS(tls_files)
    yield server
    server.close()


@pytest.fixture(scope="module")
def maria_tls(tls_files: TLSFiles) -> Iterator[MariaDBTLS]:
    server = MariaDBTLS(tls_files)
    yield server
    server.close()


@pytest.fixture(params=["postgresql", "mariadb"])
def server(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Connection fields of the backend's TLS server (user that must use TLS, no client cert)."""
    if request.param == "postgresql":
        pg: PostgresTLS = request.getfixturevalue("pg_tls")
        return {"driver": "postgresql", "port": pg.port, "user": "im_tls", "database": "postgres"}
    maria: MariaDBTLS = request.getfixturevalue("maria_tls")
    return {
        "driver": "mariadb",
        "port": maria.port,
        "user": "im_tls",
        "password": maria.password,
        "database": "im",
    }


def _fields(server: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {"host": "127.0.0.1", "connect_timeout": 5, **server, **changes}


def _cipher(provider: db.DBProvider, driver: str) -> str:
    sql = (
        "SELECT cipher FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
        if driver == "postgresql"
        else "SHOW SESSION STATUS LIKE 'Ssl_cipher'"
    )
    with provider.session() as session:
        row = session.execute(text(sql)).one()
    return str(row[-1] or "")


def test_servers_refuse_plaintext(pg_tls: PostgresTLS, maria_tls: MariaDBTLS) -> None:
    """The fixtures really enforce TLS: the raw drivers without it are turned away."""
    with pytest.raises(psycopg.OperationalError, match="no encryption"):
        psycopg.connect(
            host="127.0.0.1", port=pg_tls.port, user="im_tls", dbname="postgres", sslmode="disable"
        )
    with pytest.raises(pymysql.err.OperationalError) as info:
        pymysql.connect(
            host="127.0.0.1", port=maria_tls.port, user="im_tls",
            password=maria_tls.password, database="im", ssl_disabled=True,
        )  # fmt: skip
    assert info.value.args[0] == 1045  # access denied: the user is REQUIRE SSL


def test_verified_tls(server: dict[str, Any], tls_files: TLSFiles) -> None:
    tls = {"enabled": True, "caFile": str(tls_files.ca.cert)}
    with db.new("it-db-tls", **_fields(server, tls=tls)) as provider:
        provider.ping()
        assert _cipher(provider, server["driver"])  # encrypted, not just connected


def test_verified_tls_async(server: dict[str, Any], tls_files: TLSFiles) -> None:
    tls = {"enabled": True, "caFile": str(tls_files.ca.cert)}

    async def run() -> None:
        async with db.new_async("it-db-tls", **_fields(server, tls=tls)) as provider:
            await provider.ping()

    asyncio.run(run())


def test_client_certificate(
    pg_tls: PostgresTLS, maria_tls: MariaDBTLS, tls_files: TLSFiles
) -> None:
    """Mutual TLS: PostgreSQL ``cert`` authentication and a MariaDB ``REQUIRE X509`` user."""
    tls = {
        "enabled": True,
        "caFile": str(tls_files.ca.cert),
        "certFile": str(tls_files.client_cert),
        "keyFile": str(tls_files.client_key),
    }
    pg = {"driver": "postgresql", "port": pg_tls.port, "user": "im_cert", "database": "postgres"}
    maria = {
        "driver": "mariadb", "port": maria_tls.port, "user": "im_x509",
        "password": maria_tls.password, "database": "im",
    }  # fmt: skip
    for fields in (pg, maria):
        with db.new("it-db-tls", **_fields(fields, tls=tls)) as provider:
            provider.ping()
        without_cert = {"enabled": True, "caFile": str(tls_files.ca.cert)}
        with (
            db.new("it-db-tls", **_fields(fields, tls=without_cert)) as provider,
            pytest.raises(db.DBConnectionError),
        ):
            provider.ping()


BAD: dict[str, Callable[[TLSFiles], dict[str, Any]]] = {
    "wrong CA": lambda f: {"tls": {"enabled": True, "caFile": str(f.wrong_ca.cert)}},
    "system CAs only": lambda f: {"tls": {"enabled": True}},
    "wrong host name": lambda f: {
        "host": f.wrong_host,
        "tls": {"enabled": True, "caFile": str(f.ca.cert)},
    },
}


@pytest.mark.parametrize("case", list(BAD))
def test_certificate_problems_are_typed(
    server: dict[str, Any], tls_files: TLSFiles, case: str
) -> None:
    fields = _fields(server, **BAD[case](tls_files))
    with db.new("it-db-tls", **fields) as provider, pytest.raises(db.TLSCertificateError) as info:
        provider.ping()
    message = str(info.value)
    assert "certificate" in message
    assert info.value.server is not None and str(server["port"]) in info.value.server
    assert isinstance(info.value, db.TLSError | db.DBConnectionError)
    if "password" in server:
        assert server["password"] not in message

    async def run() -> db.DBError:
        async with db.new_async("it-db-tls", **fields) as provider:
            with pytest.raises(db.TLSCertificateError) as ainfo:
                await provider.ping()
        return ainfo.value

    assert "certificate" in str(asyncio.run(run()))


def test_verify_off_still_encrypts(server: dict[str, Any]) -> None:
    """``tls.verify: false`` (testing only) accepts the unknown CA but keeps TLS on."""
    with db.new("it-db-tls", **_fields(server, tls={"enabled": True, "verify": False})) as p:
        assert _cipher(p, server["driver"])
