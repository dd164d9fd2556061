"""Throwaway certificate authorities and TLS-enforcing servers owned by one test module.

Certificates are made with the ``openssl`` CLI (no extra Python dependency): a CA, a server
certificate for ``IP:127.0.0.1`` only (so connecting to ``localhost`` is a host-name mismatch) and
a client certificate. A second, unrelated CA plays the "wrong CA".

The servers run the machine's binaries on free ports in their own temporary directories and
enforce TLS themselves:

- :class:`PostgresTLS`: its own cluster (``initdb``/``pg_ctl`` of the newest PostgreSQL in
  ``/usr/lib/postgresql``), ``ssl=on`` and a ``pg_hba.conf`` with ``hostssl`` lines only (one
  requiring a client certificate);
- :class:`MariaDBTLS`: its own ``mariadbd`` with ``--ssl-*`` and users ``REQUIRE SSL`` /
  ``REQUIRE X509``.

Both start within a bounded time (or raise with the server's log tail) and delete their files when
closed. When the tests run as root, the PostgreSQL cluster runs as the ``postgres`` user (``initdb``
refuses root) and MariaDB as ``--user=root``.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from im_infra_testsupport.backends import free_port, tcp_open

__all__ = ["CA", "MariaDBTLS", "PostgresTLS", "TLSFiles", "make_tls_files"]

_TIMEOUT = 60.0


def _openssl(*args: str, cwd: Path) -> None:
    binary = shutil.which("openssl")
    if binary is None:
        raise RuntimeError("openssl is needed to make the test certificates")
    subprocess.run([binary, *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@dataclass(frozen=True)
class CA:
    """A certificate authority: ``cert`` (PEM) and ``key``."""

    cert: Path
    key: Path

    @classmethod
    def create(cls, directory: Path, name: str) -> CA:
        cert, key = directory / f"{name}.crt", directory / f"{name}.key"
        _openssl(
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-keyout", str(key), "-out", str(cert), "-subj", f"/CN=im-infra test {name}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            cwd=directory,
        )  # fmt: skip
        return cls(cert, key)

    def issue(self, directory: Path, name: str, san: str, usage: str) -> tuple[Path, Path]:
        """A leaf certificate signed by this CA: (cert, key)."""
        cert, key, csr = (directory / f"{name}{ext}" for ext in (".crt", ".key", ".csr"))
        ext = directory / f"{name}.ext"
        ext.write_text(
            "basicConstraints=CA:FALSE\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\n"
            f"extendedKeyUsage={usage}\n"
            "subjectKeyIdentifier=hash\n"
            "authorityKeyIdentifier=keyid\n" + (f"subjectAltName={san}\n" if san else "")
        )
        _openssl(
            "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
            "-subj", f"/CN={name}", cwd=directory,
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-in", str(csr), "-CA", str(self.cert), "-CAkey", str(self.key),
            "-CAcreateserial", "-days", "2", "-sha256", "-extfile", str(ext), "-out", str(cert),
            cwd=directory,
        )  # fmt: skip
        return cert, key


@dataclass(frozen=True)
class TLSFiles:
    """Everything a TLS test needs: the CA, a server and a client certificate, a wrong CA."""

    ca: CA
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    wrong_ca: CA
    """An unrelated CA: a client trusting only this one must refuse the server."""

    server_host = "127.0.0.1"
    """The only name in the server certificate (``subjectAltName=IP:127.0.0.1``)."""
    wrong_host = "localhost"
    """Reaches the same server, but is not in its certificate."""


def make_tls_files(directory: Path) -> TLSFiles:
    directory.mkdir(parents=True, exist_ok=True)
    ca = CA.create(directory, "ca")
    # clientAuth too: etcd's own gateway connects to itself with the server certificate.
    server_cert, server_key = ca.issue(directory, "server", "IP:127.0.0.1", "serverAuth,clientAuth")
    # The client's CN is a database user name: PostgreSQL's ``cert`` method checks it.
    client_cert, client_key = ca.issue(directory, "im_cert", "", "clientAuth")
    wrong_ca = CA.create(directory, "wrong-ca")
    for path in directory.glob("*.key"):  # libpq refuses a key file others may read
        path.chmod(0o600)
    return TLSFiles(ca, server_cert, server_key, client_cert, client_key, wrong_ca)


def _wait(check: object, what: str, log: Path, proc: subprocess.Popen[bytes] | None) -> None:
    deadline = time.monotonic() + _TIMEOUT
    while time.monotonic() < deadline:
        if callable(check) and check():
            return
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.1)
    tail = ""
    if log.exists():
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
    raise RuntimeError(f"{what} did not start within {_TIMEOUT:.0f}s:\n{tail}")


def _as_root() -> bool:
    return os.geteuid() == 0


# ------------------------------------------------------------------------------ PostgreSQL
def _pg_bin() -> Path:
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if versions:
        return versions[-1].parent
    found = shutil.which("initdb")
    if found is None:
        raise RuntimeError("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    return Path(found).parent


@dataclass
class PostgresTLS:
    """A PostgreSQL cluster that accepts TLS connections only (``hostssl``), verify-full ready.

    Roles: ``im_tls`` (trusted over TLS) and ``im_cert`` (``cert`` authentication: only with the
    client certificate, whose CN is ``im_cert``); the database is ``postgres``. Plaintext
    connections match no ``pg_hba.conf`` line and are refused.
    """

    files: TLSFiles
    port: int = 0
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="im-pg-tls-")))
    _user: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.port = free_port()
        self.root.chmod(0o755)
        data = self.root / "data"
        if _as_root():
            self._user = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.root, "postgres")
        bin_dir = _pg_bin()
        self._pg_ctl = str(bin_dir / "pg_ctl")
        self._run(str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "reject")
        for src, name in (
            (self.files.server_cert, "server.crt"),
            (self.files.server_key, "server.key"),
            (self.files.ca.cert, "ca.crt"),
        ):
            dst = data / name
            shutil.copyfile(src, dst)
            dst.chmod(0o600)
            if _as_root():
                shutil.chown(dst, "postgres", pwd.getpwnam("postgres").pw_gid)
        with (data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"listen_addresses = '127.0.0.1'\nport = {self.port}\n"
                f"unix_socket_directories = '{self.root}'\n"
                "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n"
                "ssl_ca_file = 'ca.crt'\nfsync = off\nshared_buffers = 16MB\nmax_connections = 30\n"
            )
        (data / "pg_hba.conf").write_text(
            "local all postgres trust\n"
            "hostssl all im_tls 127.0.0.1/32 trust\n"
            "hostssl all im_cert 127.0.0.1/32 cert\n"
        )
        self.log = self.root / "postgres.log"
        self._run(self._pg_ctl, "-D", str(data), "-l", str(self.log), "-w", "-t", "60", "start")
        _wait(lambda: tcp_open("127.0.0.1", self.port), "PostgreSQL (TLS)", self.log, None)
        self._psql(
            "CREATE ROLE im_tls LOGIN; CREATE ROLE im_cert LOGIN; "
            "GRANT ALL ON SCHEMA public TO im_tls, im_cert;"
        )

    def _run(self, *cmd: str) -> None:
        try:
            subprocess.run([*self._user, *cmd], check=True, capture_output=True, timeout=_TIMEOUT)
        except subprocess.CalledProcessError as exc:
            raise RuntimeError(f"{cmd[0]} failed: {exc.stderr.decode(errors='replace')}") from exc

    def _psql(self, sql: str) -> None:
        psql = str(_pg_bin() / "psql")
        self._run(
            psql, "-h", str(self.root), "-p", str(self.port), "-U", "postgres", "-d", "postgres",
            "-v", "ON_ERROR_STOP=1", "-c", sql,
        )  # fmt: skip

    def close(self) -> None:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self._run(self._pg_ctl, "-D", str(self.root / "data"), "-m", "immediate", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


# ------------------------------------------------------------------------------ MariaDB
@dataclass
class MariaDBTLS:
    """A ``mariadbd`` with TLS on, and users that the server forces to use it.

    ``im_tls`` is ``REQUIRE SSL``, ``im_x509`` is ``REQUIRE X509`` (a client certificate signed
    by the CA); both may use database ``im``. Their password is :attr:`password`.
    """

    files: TLSFiles
    password: str = "Tls-pw-7c1"
    port: int = 0
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="im-maria-tls-")))
    _proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        install = shutil.which("mariadb-install-db") or shutil.which("mysql_install_db")
        server = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
        if install is None or not Path(server).exists():
            raise RuntimeError("MariaDB server binaries (mariadbd, mariadb-install-db) are missing")
        self.port = free_port()
        data, self.socket = self.root / "data", self.root / "sock"
        user = ["--user=root"] if _as_root() else []
        self.log = self.root / "mariadb.log"
        subprocess.run(
            [install, "--no-defaults", f"--datadir={data}", "--skip-test-db",
             "--auth-root-authentication-method=normal", *user],
            check=True, capture_output=True, timeout=_TIMEOUT,
        )  # fmt: skip
        cmd = [
            server, "--no-defaults", f"--datadir={data}", f"--port={self.port}",
            "--bind-address=127.0.0.1", f"--socket={self.socket}",
            f"--pid-file={self.root / 'mariadb.pid'}", f"--log-error={self.log}",
            "--skip-log-bin", "--innodb-buffer-pool-size=16M", "--skip-name-resolve",
            f"--ssl-ca={self.files.ca.cert}", f"--ssl-cert={self.files.server_cert}",
            f"--ssl-key={self.files.server_key}", *user,
        ]  # fmt: skip
        self._proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        _wait(lambda: self.socket.exists(), "MariaDB (TLS)", self.log, self._proc)
        _wait(lambda: tcp_open("127.0.0.1", self.port), "MariaDB (TLS)", self.log, self._proc)
        pw = self.password
        self._sql(
            "CREATE DATABASE im; "
            f"CREATE USER 'im_tls'@'%' IDENTIFIED BY '{pw}' REQUIRE SSL; "
            f"CREATE USER 'im_x509'@'%' IDENTIFIED BY '{pw}' REQUIRE X509; "
            "GRANT ALL ON im.* TO 'im_tls'@'%', 'im_x509'@'%';"
        )

    def _sql(self, sql: str) -> None:
        client = shutil.which("mariadb") or shutil.which("mysql") or "mariadb"
        subprocess.run(
            [client, "--no-defaults", f"--socket={self.socket}", "-uroot", "-e", sql],
            check=True, capture_output=True, timeout=_TIMEOUT,
        )  # fmt: skip

    def close(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait(timeout=15)
        shutil.rmtree(self.root, ignore_errors=True)
