"""TLS to an own redis-server (self-signed certificate made with openssl): server verification,
mutual TLS, the rediss:// URL form, and a typed error when the certificate is not trusted."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from backends import free_port

from im_infra import cache

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FAST = {
    "connect_timeout": 2.0,
    "read_timeout": 2.0,
    "retry": {"max_retries": 1, "min_backoff": 0.01, "max_backoff": 0.02},
}


@pytest.fixture
def certs(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (it is its own CA) and its key."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("openssl is needed to make the test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    return cert, key


def tls_server(factory: Any, certs: tuple[Path, Path], *, mutual: bool) -> int:
    cert, key = certs
    port = free_port()
    factory(
        "--tls-port", str(port), "--tls-cert-file", str(cert), "--tls-key-file", str(key),
        "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "yes" if mutual else "no",
    )  # fmt: skip
    return int(port)


def test_tls_with_server_verification(
    make_cache: Any, redis_server_factory: Any, certs: tuple[Path, Path]
) -> None:
    port = tls_server(redis_server_factory, certs, mutual=False)
    cert = str(certs[0])
    c = make_cache(address=f"127.0.0.1:{port}", tls={"enabled": True, "ca_cert": cert}, **FAST)
    assert c.set("k", "v") is True
    assert c.get("k") == "v"
    url = make_cache(address=f"rediss://127.0.0.1:{port}/0", tls={"caCert": cert}, **FAST)
    assert url.config.tls.enabled
    assert url.ping() is True
    untrusted = make_cache(address=f"127.0.0.1:{port}", tls={"enabled": True}, **FAST)
    with pytest.raises(cache.CacheUnavailable):
        untrusted.get("k")  # self-signed: not in the system store
    insecure = make_cache(
        address=f"127.0.0.1:{port}", tls={"enabled": True, "insecureSkipVerify": True}, **FAST
    )
    assert insecure.ping() is True


def test_mutual_tls(make_cache: Any, redis_server_factory: Any, certs: tuple[Path, Path]) -> None:
    port = tls_server(redis_server_factory, certs, mutual=True)
    cert, key = str(certs[0]), str(certs[1])
    tls = {"enabled": True, "ca_cert": cert, "cert_file": cert, "key_file": key}
    c = make_cache(address=f"127.0.0.1:{port}", tls=tls, **FAST)
    assert c.set("k", "v") is True
    anonymous = make_cache(address=f"127.0.0.1:{port}", tls={"enabled": True, "caCert": cert})
    with pytest.raises(cache.CacheUnavailable):
        anonymous.get("k")  # no client certificate
