"""TLS: an etcd started by this test with server and client certificates (made with openssl)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from backends import free_port

from im_infra import coord
from im_infra.coord import CoordUnavailable


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def _make_certs(d: Path) -> None:
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl(
        "req",
        "-x509",
        *ec,
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "1",
        "-subj",
        "/CN=im-infra-test-ca",
        cwd=d,
    )
    for name, usage in (("server", "serverAuth,clientAuth"), ("client", "clientAuth")):
        (d / f"{name}.ext").write_text(
            f"subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage={usage}\n"
        )
        _openssl(
            "req",
            *ec,
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            "-subj",
            f"/CN={name}",
            cwd=d,
        )
        _openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            f"{name}.pem",
            "-days",
            "1",
            "-extfile",
            f"{name}.ext",
            cwd=d,
        )


def _healthy(port: int, d: Path) -> bool:
    ctx = ssl.create_default_context(cafile=str(d / "ca.pem"))
    ctx.load_cert_chain(str(d / "client.pem"), str(d / "client.key"))
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=1) as raw,
            ctx.wrap_socket(raw, server_hostname="127.0.0.1"),
        ):
            return True
    except OSError:
        return False


@pytest.fixture
def tls_etcd(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    if shutil.which("openssl") is None:
        pytest.fail("openssl is needed to make the test certificates (apt-get install openssl)")
    etcd = shutil.which("etcd")
    if etcd is None:
        pytest.fail("no etcd binary: run `scripts/devstack up` first")
    _make_certs(tmp_path)
    port, peer = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
    log = (tmp_path / "etcd.log").open("wb")
    proc = subprocess.Popen(
        [
            etcd,
            "--name",
            "tls",
            "--data-dir",
            str(tmp_path / "data"),
            "--listen-client-urls",
            f"https://127.0.0.1:{port}",
            "--advertise-client-urls",
            f"https://127.0.0.1:{port}",
            "--listen-peer-urls",
            f"http://127.0.0.1:{peer}",
            "--initial-advertise-peer-urls",
            f"http://127.0.0.1:{peer}",
            "--initial-cluster",
            f"tls=http://127.0.0.1:{peer}",
            "--cert-file",
            str(tmp_path / "server.pem"),
            "--key-file",
            str(tmp_path / "server.key"),
            "--trusted-ca-file",
            str(tmp_path / "ca.pem"),
            "--client-cert-auth",
            "--heartbeat-interval",
            "10",
            "--election-timeout",
            "100",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not _healthy(port, tmp_path):
            if time.monotonic() > deadline or proc.poll() is not None:
                pytest.fail("TLS etcd did not start:\n" + (tmp_path / "etcd.log").read_text())
            time.sleep(0.1)
        yield f"127.0.0.1:{port}", tmp_path
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        log.close()


def test_tls_with_client_certificate(tls_etcd: tuple[str, Path]) -> None:
    endpoint, d = tls_etcd
    with coord.connect(
        endpoint,
        ca_cert=str(d / "ca.pem"),
        cert_cert=str(d / "client.pem"),
        cert_key=str(d / "client.key"),
        timeout=3,
    ) as p:
        p.config.set("tls.yaml", "secure: true\n")
        assert p.config.get_document("tls.yaml") == {"secure": True}
        with p.lock.acquire("tls-lock", ttl=2, timeout=3):
            pass
    # https:// in the endpoint also turns TLS on
    with coord.connect(
        f"https://{endpoint}",
        ca_cert=str(d / "ca.pem"),
        cert_cert=str(d / "client.pem"),
        cert_key=str(d / "client.key"),
        timeout=3,
    ) as p:
        assert p.config.get_document("tls.yaml") == {"secure": True}


def test_tls_refused_without_client_cert_or_tls(tls_etcd: tuple[str, Path]) -> None:
    endpoint, d = tls_etcd
    with coord.connect(endpoint, ca_cert=str(d / "ca.pem"), timeout=1) as p:
        start = time.monotonic()
        with pytest.raises(CoordUnavailable, match=endpoint):
            p.config.get("tls.yaml")
        assert time.monotonic() - start < 3
    with coord.connect(endpoint, timeout=1) as p, pytest.raises(CoordUnavailable):
        p.config.get("tls.yaml")
