"""TLS: an etcd started by this test with server and client certificates from the throwaway CA
of ``tls_servers`` (``tls_files``), requiring client certificates (``--client-cert-auth``).

A wrong CA and a server certificate that does not name the endpoint's host both fail with
:class:`coord.TLSError` (a ``CoordUnavailable``) saying it is a certificate problem.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from im_infra import coord
from im_infra.coord import CoordUnavailable
from im_infra_testsupport.backends import free_port
from im_infra_testsupport.tls_servers import TLSFiles

pytestmark = [pytest.mark.integration, pytest.mark.slow]

StartEtcd = Callable[[Path, Path], str]


def _healthy(port: int, files: TLSFiles) -> bool:
    ctx = ssl.create_default_context(cafile=str(files.ca.cert))
    ctx.check_hostname = False  # the server certificate may name another host on purpose
    ctx.load_cert_chain(str(files.client_cert), str(files.client_key))
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=1) as raw,
            ctx.wrap_socket(raw, server_hostname="127.0.0.1"),
        ):
            return True
    except OSError:
        return False


@pytest.fixture
def start_etcd(tmp_path: Path, tls_files: TLSFiles) -> Iterator[StartEtcd]:
    """start_etcd(server_cert, server_key) -> "127.0.0.1:port" of a TLS-only etcd."""
    etcd = shutil.which("etcd")
    if etcd is None:
        pytest.fail("no etcd binary: run `scripts/devstack up` first")
    procs: list[subprocess.Popen[bytes]] = []

    def start(cert: Path, key: Path) -> str:
        root = tmp_path / f"etcd{len(procs)}"
        root.mkdir()
        port, peer = free_port(), free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
        with (root / "etcd.log").open("wb") as log:
            proc = subprocess.Popen(
                [etcd, "--name", "tls", "--data-dir", str(root / "data"),
                 "--listen-client-urls", f"https://127.0.0.1:{port}",
                 "--advertise-client-urls", f"https://127.0.0.1:{port}",
                 "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                 "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                 "--initial-cluster", f"tls=http://127.0.0.1:{peer}",
                 "--cert-file", str(cert), "--key-file", str(key),
                 "--trusted-ca-file", str(tls_files.ca.cert), "--client-cert-auth",
                 "--heartbeat-interval", "10", "--election-timeout", "100"],
                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
            )  # fmt: skip
        procs.append(proc)
        deadline = time.monotonic() + 30
        while not _healthy(port, tls_files):
            if time.monotonic() > deadline or proc.poll() is not None:
                pytest.fail("TLS etcd did not start:\n" + (root / "etcd.log").read_text())
            time.sleep(0.1)
        return f"127.0.0.1:{port}"

    yield start
    for proc in procs:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)


@pytest.fixture
def tls_etcd(start_etcd: StartEtcd, tls_files: TLSFiles) -> str:
    return start_etcd(tls_files.server_cert, tls_files.server_key)


def _client(files: TLSFiles, **changes: str) -> dict[str, Any]:
    return {
        "ca_cert": str(files.ca.cert),
        "cert_cert": str(files.client_cert),
        "cert_key": str(files.client_key),
        **changes,
    }


def test_tls_with_client_certificate(tls_etcd: str, tls_files: TLSFiles) -> None:
    with coord.connect(tls_etcd, timeout=3, **_client(tls_files)) as p:
        p.config.set("tls.yaml", "secure: true\n")
        assert p.config.get_document("tls.yaml") == {"secure": True}
        with p.lock.acquire("tls-lock", ttl=2, timeout=3):
            pass
    # https:// in the endpoint also turns TLS on
    with coord.connect(f"https://{tls_etcd}", timeout=3, **_client(tls_files)) as p:
        assert p.config.get_document("tls.yaml") == {"secure": True}


def test_tls_refused_without_client_cert_or_tls(tls_etcd: str, tls_files: TLSFiles) -> None:
    with coord.connect(tls_etcd, ca_cert=str(tls_files.ca.cert), timeout=1) as p:
        start = time.monotonic()
        with pytest.raises(CoordUnavailable, match=tls_etcd):
            p.config.get("tls.yaml")
        assert time.monotonic() - start < 3
    with coord.connect(tls_etcd, timeout=1) as p, pytest.raises(CoordUnavailable):
        p.config.get("tls.yaml")


def test_wrong_ca_is_a_certificate_error(tls_etcd: str, tls_files: TLSFiles) -> None:
    client = _client(tls_files, ca_cert=str(tls_files.wrong_ca.cert))
    with coord.connect(tls_etcd, timeout=1, **client) as p:
        with pytest.raises(coord.TLSError, match="TLS certificate problem") as info:
            p.config.get("tls.yaml")
        assert "CERTIFICATE_VERIFY_FAILED" in str(info.value)
        assert isinstance(info.value, CoordUnavailable)


def test_wrong_host_is_a_certificate_error(
    start_etcd: StartEtcd, tls_files: TLSFiles, tmp_path: Path
) -> None:
    """The server's certificate names another host (the CA is right)."""
    cert, key = tls_files.ca.issue(tmp_path, "other", "DNS:other.invalid", "serverAuth,clientAuth")
    endpoint = start_etcd(cert, key)
    with coord.connect(endpoint, timeout=1, **_client(tls_files)) as p:
        with pytest.raises(coord.TLSError, match="TLS certificate problem") as info:
            p.config.get("tls.yaml")
        assert "hostname verification" in str(info.value).lower()
