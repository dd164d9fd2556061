"""TLS to an own redis-server that accepts TLS only (``--port 0 --tls-port``), with certificates
from a throwaway CA (``tls_files``): server verification, mutual TLS (``--tls-auth-clients yes``),
the rediss:// URL form, and :class:`cache.CacheTLSError` (a ``CacheUnavailable``) saying it is a
certificate problem for a wrong CA, a host name the certificate does not name, and a missing client
certificate. Both flavours (blocking, asyncio) run every test (``make_cache``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis

from im_infra import cache
from im_infra_testsupport.tls_servers import TLSFiles

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FAST = {
    "connect_timeout": 2.0,
    "read_timeout": 2.0,
    "retry": {"max_retries": 1, "min_backoff": 0.01, "max_backoff": 0.02},
}


def tls_server(factory: Any, files: TLSFiles, *, mutual: bool, protocols: str = "") -> int:
    extra = ("--tls-protocols", protocols) if protocols else ()
    server = factory(
        "--tls-cert-file", str(files.server_cert), "--tls-key-file", str(files.server_key),
        "--tls-ca-cert-file", str(files.ca.cert), "--tls-auth-clients", "yes" if mutual else "no",
        *extra, tls_only=True,
    )  # fmt: skip
    return int(server.port)


def test_server_refuses_plaintext(redis_server_factory: Any, tls_files: TLSFiles) -> None:
    port = tls_server(redis_server_factory, tls_files, mutual=False)
    raw = redis.Redis(port=port, socket_timeout=2, socket_connect_timeout=2)
    with pytest.raises(redis.ConnectionError):
        raw.ping()  # the TLS port does not speak RESP in the clear
    raw.close()


def test_tls_with_server_verification(
    make_cache: Any, redis_server_factory: Any, tls_files: TLSFiles
) -> None:
    port = tls_server(redis_server_factory, tls_files, mutual=False)
    ca = str(tls_files.ca.cert)
    c = make_cache(address=f"127.0.0.1:{port}", tls={"enabled": True, "ca_cert": ca}, **FAST)
    assert c.set("k", "v") is True
    assert c.get("k") == "v"
    url = make_cache(address=f"rediss://127.0.0.1:{port}/0", tls={"caCert": ca}, **FAST)
    assert url.config.tls.enabled
    assert url.ping() is True
    insecure = make_cache(
        address=f"127.0.0.1:{port}", tls={"enabled": True, "insecureSkipVerify": True}, **FAST
    )
    assert insecure.ping() is True  # testing only: any certificate, still encrypted


BAD: dict[str, Callable[[TLSFiles], tuple[str, dict[str, str]]]] = {
    "wrong CA": lambda f: ("127.0.0.1", {"caCert": str(f.wrong_ca.cert)}),
    "system CAs only": lambda f: ("127.0.0.1", {}),
    "wrong host name": lambda f: (f.wrong_host, {"caCert": str(f.ca.cert)}),
}


@pytest.mark.parametrize("case", list(BAD))
def test_certificate_problems_are_typed(
    make_cache: Any, redis_server_factory: Any, tls_files: TLSFiles, case: str
) -> None:
    port = tls_server(redis_server_factory, tls_files, mutual=False)
    host, tls = BAD[case](tls_files)
    c = make_cache(address=f"{host}:{port}", tls={"enabled": True, **tls}, **FAST)
    with pytest.raises(cache.CacheTLSError, match="TLS certificate problem") as info:
        c.get("k")
    assert isinstance(info.value, cache.CacheUnavailable)
    expected = "mismatch" if case == "wrong host name" else "certificate"
    assert expected in str(info.value).lower()


def test_mutual_tls(make_cache: Any, redis_server_factory: Any, tls_files: TLSFiles) -> None:
    # TLS 1.2: the server refuses a client without a certificate inside the handshake. (Under
    # TLS 1.3 the client's side of the handshake completes first and the refusal arrives at the
    # first read, as an alert, a bare EOF or a reset depending on timing: only CacheUnavailable
    # is certain there; docs/security.md says so.)
    port = tls_server(redis_server_factory, tls_files, mutual=True, protocols="TLSv1.2")
    ca = str(tls_files.ca.cert)
    tls = {
        "enabled": True,
        "ca_cert": ca,
        "cert_file": str(tls_files.client_cert),
        "key_file": str(tls_files.client_key),
    }
    c = make_cache(address=f"127.0.0.1:{port}", tls=tls, **FAST)
    assert c.set("k", "v") is True
    anonymous = make_cache(address=f"127.0.0.1:{port}", tls={"enabled": True, "caCert": ca}, **FAST)
    # no client certificate: the handshake fails, a CacheTLSError pointing at the certificates
    with pytest.raises(cache.CacheTLSError, match=r"tls\.certFile"):
        anonymous.get("k")
