"""Every benchmark still runs and ends with its JSON line (tiny sizes: this checks that the
benchmarks work against the real backends, not the figures, which are measured by hand)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# bench name -> (tiny-size arguments, backend env vars it reads, keys its JSON line must carry)
BENCHES: dict[str, tuple[list[str], list[str], list[str]]] = {
    "clog": (["--lines", "2000", "--repeat", "1"], [], ["ratio_vs_loguru", "ratio_vs_stdlib"]),
    "uid": (["--rounds", "1", "--ids", "40960"], [], ["next_id_per_s"]),
    "coord": (
        ["--seconds", "0.2", "--locks", "20", "--allocs", "10"],
        ["IM_INFRA_ETCD_ENDPOINTS"],
        ["lock_p50_ms"],
    ),
    "cache": (["--rounds", "1", "--ops", "200"], ["IM_INFRA_REDIS_URL"], []),
    "grpc": (
        ["--rounds", "1", "--calls", "200"],
        ["IM_INFRA_ETCD_ENDPOINTS"],
        ["call_ratio_vs_plain_channel", "aio_call_ratio_vs_plain_channel"],
    ),
    "db": (["--ops", "50", "--no-bare"], ["IM_INFRA_PG_URL", "IM_INFRA_MYSQL_URL"], []),
    "mq": (
        [
            "--messages",
            "2000",
            "--consume-messages",
            "2000",
            "--rounds",
            "1",
            "--sync-sends",
            "20",
            "--prefetch-wait",
            "0.2",
            "--faststream-messages",
            "200",
        ],
        ["IM_INFRA_KAFKA_BROKERS"],
        [
            "produce_ratio_vs_confluent",
            "produce_batch_ratio_vs_confluent",
            "consume_ratio_vs_confluent",
            "consume_ratio_vs_aiokafka",  # the peers of issue #17 (the dev group installs them)
            "produce_ratio_vs_faststream",
            "consume_async_ratio_vs_faststream",
            "send_sync_p99_ms",
        ],
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(BENCHES))
def test_benchmark_runs(name: str, request: pytest.FixtureRequest) -> None:
    args, env_vars, keys = BENCHES[name]
    fixture_for = {
        "IM_INFRA_ETCD_ENDPOINTS": "etcd_endpoints",
        "IM_INFRA_REDIS_URL": "redis_url",
        "IM_INFRA_PG_URL": "pg_url",
        "IM_INFRA_MYSQL_URL": "mysql_url",
        "IM_INFRA_KAFKA_BROKERS": "kafka_brokers",
    }
    env = dict(os.environ)
    for var in env_vars:
        env[var] = request.getfixturevalue(fixture_for[var])
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / f"bench_{name}.py"), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    result = json.loads(last)
    assert result["bench"] == name
    for key in keys:
        assert isinstance(result[key], (int, float)) and result[key] > 0, (key, result)


@pytest.mark.slow
def test_broker_fetch_rate_runs(kafka_brokers: str) -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "broker_fetch_rate.py"), "--seconds", "3"],
        cwd=REPO,
        env={**os.environ, "IM_INFRA_KAFKA_BROKERS": kafka_brokers},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["bench"] == "broker_fetch_rate"
    # any broker answers at least the fetches of one idle consumer (Apache Kafka: ~2 a second)
    assert result["fetch_per_s"] > 0 and result["cpu_pct"] >= 0
