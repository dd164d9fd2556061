"""docker/compose.yaml: the developer stack has every server, with ports and health checks.

Where the Docker compose plugin exists, `docker compose config` validates and normalizes the file
and the checks run on its output; elsewhere (this machine kind has no compose plugin) the YAML is
parsed directly. `.ci/run` also validates it against the compose-spec JSON schema.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

COMPOSE = Path(__file__).resolve().parents[2] / "docker" / "compose.yaml"

# service -> (image prefix, host ports it must publish)
EXPECTED: dict[str, tuple[str, set[int]]] = {
    "kafka-1": ("apache/kafka:", {9092}),
    "kafka-2": ("apache/kafka:", {9093}),
    "kafka-3": ("apache/kafka:", {9094}),
    "etcd-1": ("gcr.io/etcd-development/etcd:", {2379}),
    "etcd-2": ("gcr.io/etcd-development/etcd:", {22379}),
    "etcd-3": ("gcr.io/etcd-development/etcd:", {32379}),
    "mysql": ("mysql:8", {3306}),
    "postgres": ("postgres:", {5432}),
    "redis": ("redis:7", {6379}),
}


def compose_plugin() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        probe = subprocess.run(
            ["docker", "compose", "version"], capture_output=True, timeout=20, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


def load_compose() -> dict[str, Any]:
    if compose_plugin():
        out = subprocess.run(
            ["docker", "compose", "-f", str(COMPOSE), "config", "--format", "json"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert out.returncode == 0, f"docker compose config failed:\n{out.stderr}"
        data = json.loads(out.stdout)
    else:
        data = yaml.safe_load(COMPOSE.read_text())  # SafeLoader resolves the `<<` merge keys
    assert isinstance(data, dict)
    return data


def published_ports(service: dict[str, Any]) -> list[tuple[int, int]]:
    """(host port, container port) pairs, from the short ("9092:29092") or long syntax."""
    pairs = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            pairs.append((int(port["published"]), int(port["target"])))
            continue
        m = re.fullmatch(r"(?:[\d.]+:)?(\d+):(\d+)(?:/tcp)?", str(port))
        if m is None:
            raise ValueError(f"port {port!r} does not publish a fixed host port")
        pairs.append((int(m.group(1)), int(m.group(2))))
    return pairs


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def command_flags(service: dict[str, Any]) -> dict[str, str]:
    command = service.get("command", [])
    words = command.split() if isinstance(command, str) else list(command)
    return dict(
        w.removeprefix("--").split("=", 1) for w in words if w.startswith("--") and "=" in w
    )


def compose_problems(data: dict[str, Any]) -> list[str]:
    """Everything missing or inconsistent in a compose document; empty when it is complete."""
    problems = []
    services: dict[str, Any] = data.get("services", {})
    seen_ports: dict[int, str] = {}
    for name, (image, ports) in EXPECTED.items():
        service = services.get(name)
        if service is None:
            problems.append(f"service {name} is missing")
            continue
        if not str(service.get("image", "")).startswith(image):
            problems.append(f"{name}: image {service.get('image')!r} is not {image}*")
        health = service.get("healthcheck", {})
        if not health.get("test") or health.get("disable") or health.get("test") == ["NONE"]:
            problems.append(f"{name}: no health check")
        try:
            pairs = published_ports(service)
        except ValueError as exc:
            problems.append(f"{name}: {exc}")
            continue
        host_ports = {host for host, _ in pairs}
        if not ports <= host_ports:
            problems.append(f"{name}: publishes {sorted(host_ports)}, expected {sorted(ports)}")
        for host in host_ports:
            if host in seen_ports:
                problems.append(f"{name}: host port {host} is also used by {seen_ports[host]}")
            seen_ports[host] = name
    problems += kafka_problems(services)
    problems += etcd_problems(services)
    return problems


def kafka_problems(services: dict[str, Any]) -> list[str]:
    brokers = {n: env_of(s) for n, s in services.items() if n.startswith("kafka-")}
    if len(brokers) != 3:
        return [f"expected 3 Kafka brokers, found {sorted(brokers)}"]
    problems = []
    voters = {env.get("KAFKA_CONTROLLER_QUORUM_VOTERS") for env in brokers.values()}
    cluster_ids = {env.get("CLUSTER_ID") for env in brokers.values()}
    if len(voters) != 1 or None in voters:
        problems.append(f"Kafka brokers disagree on KAFKA_CONTROLLER_QUORUM_VOTERS: {voters}")
    if len(cluster_ids) != 1 or None in cluster_ids:
        problems.append(f"Kafka brokers disagree on CLUSTER_ID: {cluster_ids}")
    voter_ids = {v.split("@")[0] for v in (next(iter(voters)) or "").split(",") if v}
    node_ids = set()
    for name, env in sorted(brokers.items()):
        if "controller" not in env.get("KAFKA_PROCESS_ROLES", ""):
            problems.append(f"{name}: not a KRaft controller (KAFKA_PROCESS_ROLES)")
        if any("ZOOKEEPER" in key for key in env):
            problems.append(f"{name}: configures ZooKeeper; the stack is KRaft only")
        node_id = env.get("KAFKA_NODE_ID", "")
        node_ids.add(node_id)
        if node_id not in voter_ids:
            problems.append(f"{name}: KAFKA_NODE_ID {node_id!r} is not a quorum voter")
        host_ports = {h for h, _ in published_ports(services[name])}
        advertised = env.get("KAFKA_ADVERTISED_LISTENERS", "")
        if not any(
            f"127.0.0.1:{p}" in advertised or f"localhost:{p}" in advertised for p in host_ports
        ):
            problems.append(f"{name}: no advertised listener on its published port {host_ports}")
    if len(node_ids) != 3:
        problems.append(f"Kafka node ids are not distinct: {sorted(node_ids)}")
    return problems


def etcd_problems(services: dict[str, Any]) -> list[str]:
    members = {n: command_flags(s) for n, s in services.items() if n.startswith("etcd-")}
    if len(members) != 3:
        return [f"expected 3 etcd members, found {sorted(members)}"]
    problems = []
    clusters = {flags.get("initial-cluster") for flags in members.values()}
    if len(clusters) != 1 or None in clusters:
        return [f"etcd members disagree on --initial-cluster: {clusters}"]
    cluster = dict(item.split("=", 1) for item in (next(iter(clusters)) or "").split(","))
    for name, flags in sorted(members.items()):
        if flags.get("name") not in cluster:
            problems.append(f"{name}: --name {flags.get('name')!r} is not in --initial-cluster")
        elif cluster[flags["name"]] != flags.get("initial-advertise-peer-urls"):
            problems.append(f"{name}: peer URL differs from its --initial-cluster entry")
    if len(cluster) != 3:
        problems.append(f"--initial-cluster names {len(cluster)} members, expected 3")
    return problems


# ------------------------------------------------------------------------------- the file
@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose()


def test_compose_file_is_complete(compose: dict[str, Any]) -> None:
    assert compose_problems(compose) == []


def test_documented_addresses_are_published(compose: dict[str, Any]) -> None:
    """The `export IM_INFRA_...` lines in the file's header name ports the file publishes."""
    header = [line for line in COMPOSE.read_text().splitlines() if "export IM_INFRA_" in line]
    documented = {int(p) for line in header for p in re.findall(r"127\.0\.0\.1:(\d+)", line)}
    published = {h for s in compose["services"].values() for h, _ in published_ports(s)}
    assert len(header) == 5
    assert documented
    assert documented <= published, sorted(documented - published)


# ------------------------------------------------------------------------------- the checker
@pytest.mark.parametrize(
    ("break_it", "expected"),
    [
        (lambda d: d["services"].pop("kafka-3"), "service kafka-3 is missing"),
        (lambda d: d["services"]["redis"].pop("healthcheck"), "redis: no health check"),
        (lambda d: d["services"]["mysql"].update(image="mysql:5.7"), "mysql: image"),
        (lambda d: d["services"]["postgres"].update(ports=["3306:5432"]), "host port 3306"),
        (lambda d: d["services"]["etcd-2"].update(ports=["2379"]), "etcd-2: port '2379'"),
        (
            lambda d: d["services"]["kafka-2"]["environment"].update(KAFKA_NODE_ID="7"),
            "kafka-2: KAFKA_NODE_ID '7' is not a quorum voter",
        ),
        (
            lambda d: d["services"]["kafka-1"]["environment"].update(KAFKA_PROCESS_ROLES="broker"),
            "kafka-1: not a KRaft controller",
        ),
        (
            lambda d: d["services"]["etcd-3"].update(command=["etcd", "--name=etcd-9"]),
            "etcd members disagree on --initial-cluster",
        ),
    ],
)
def test_checker_reports_a_broken_file(
    compose: dict[str, Any], break_it: Any, expected: str
) -> None:
    broken = copy.deepcopy(compose)
    if "environment" in broken["services"].get("kafka-1", {}):
        for name in ("kafka-1", "kafka-2", "kafka-3"):  # normalize list-style environments
            broken["services"][name]["environment"] = env_of(broken["services"][name])
    break_it(broken)
    problems = compose_problems(broken)
    assert any(expected in p for p in problems), problems
