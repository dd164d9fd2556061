"""uid with worker IDs allocated by coord on a real etcd (the devstack's)."""

from __future__ import annotations

import heapq
import json
import subprocess
import sys
import time
import uuid
from array import array
from pathlib import Path

import pytest

from im_infra import coord, uid

pytestmark = pytest.mark.integration

WORKER = Path(__file__).with_name("uid_worker.py")
MARKER = "uid-worker: "


def _service() -> str:
    return f"uid-it-{uuid.uuid4().hex[:10]}"


def _read_json_line(proc: subprocess.Popen[str], what: str) -> dict[str, object]:
    assert proc.stdout is not None
    while True:
        line = proc.stdout.readline()
        if not line:
            proc.wait(timeout=30)
            stderr = proc.stderr.read() if proc.stderr is not None else ""
            pytest.fail(f"worker exited ({proc.returncode}) before {what}: {stderr[-2000:]}")
        if line.startswith(MARKER):  # other lines are the worker's log output
            break
    message: dict[str, object] = json.loads(line[len(MARKER) :])
    assert "error" not in message, message
    return message


@pytest.mark.slow
def test_four_processes_with_coord_workers_issue_unique_ids(
    etcd_endpoints: str, tmp_path: Path
) -> None:
    service = _service()
    count = 1_000_000
    outputs = [tmp_path / f"ids-{i}.bin" for i in range(4)]
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), etcd_endpoints, service, str(count), str(out)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for out in outputs
    ]
    try:
        # every process holds its worker ID before any of them starts generating
        workers = [int(str(_read_json_line(p, "getting a worker ID")["ready"])) for p in procs]
        assert len(set(workers)) == 4, f"coord handed out a worker ID twice: {workers}"
        assert all(0 <= w <= uid.MAX_WORKER_ID for w in workers)
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        for p, worker in zip(procs, workers, strict=True):
            done = _read_json_line(p, "finishing")
            assert done == {"done": count, "worker": worker}
            assert p.wait(timeout=60) == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)

    arrays = []
    for out, worker in zip(outputs, workers, strict=True):
        ids = array("q")
        with out.open("rb") as f:
            ids.fromfile(f, count)
        assert uid.parse(ids[0]).worker == worker
        assert uid.parse(ids[-1]).worker == worker
        arrays.append(ids)
    # the four sorted streams merged: strictly increasing <=> all 4M IDs distinct
    prev = -1
    total = 0
    for value in heapq.merge(*arrays):
        assert value > prev, f"duplicate or out-of-order ID {value} (previous {prev})"
        prev = value
        total += 1
    assert total == 4 * count


def _instance_key_lease(endpoints: str, service: str, worker: int) -> int:
    out = subprocess.run(
        [
            "etcdctl",
            f"--endpoints={endpoints}",
            "get",
            f"/im-infra/instance/{service}/{worker}",
            "-w",
            "json",
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    kvs = json.loads(out).get("kvs", [])
    return int(kvs[0]["lease"]) if kvs else 0


def _generate_for(gen: uid.SnowflakeGenerator, *, seconds: float, after: int) -> None:
    """Call next_id every 10 ms for ``seconds``, checking the IDs keep increasing."""
    deadline = time.monotonic() + seconds
    last = after
    while time.monotonic() < deadline:
        value = gen.next_id()
        assert value > last
        last = value
        time.sleep(0.01)


def test_revoked_lease_stops_the_generator(etcd_endpoints: str) -> None:
    service = _service()
    with coord.connect(etcd_endpoints, timeout=5) as provider:
        gen = uid.from_coord(provider, service)
        first = gen.next_ids(1000)
        lease = _instance_key_lease(etcd_endpoints, service, gen.worker_id)
        assert lease, "coord did not store the worker ID under a lease"
        # someone else revokes the lease (an operator, an etcd compaction of a dead session...)
        subprocess.run(
            ["etcdctl", f"--endpoints={etcd_endpoints}", "lease", "revoke", f"{lease:x}"],
            check=True,
            capture_output=True,
            timeout=30,
        )
        # coord notices at its next keepalive (every TTL/3, TTL 10 s); then generation stops
        with pytest.raises(uid.WorkerIdLost, match=f"worker ID {gen.worker_id} was lost"):
            _generate_for(gen, seconds=30, after=first[-1])
        with pytest.raises(uid.WorkerIdLost):
            gen.next_ids(10)


def test_release_on_close_frees_the_worker_id(etcd_endpoints: str) -> None:
    service = _service()
    with coord.connect(etcd_endpoints, timeout=5) as provider:
        with uid.from_coord(provider, service, release_on_close=True) as gen:
            worker = gen.worker_id
            assert _instance_key_lease(etcd_endpoints, service, worker)
            gen.next_id()
        assert _instance_key_lease(etcd_endpoints, service, worker) == 0


def test_provider_closed_under_a_live_generator_stops_it(etcd_endpoints: str) -> None:
    service = _service()
    provider = coord.connect(etcd_endpoints, timeout=5)
    gen = uid.from_coord(provider, service)
    gen.next_id()
    provider.close()  # revokes the worker ID's lease: another process may take it now
    time.sleep(0.002)  # the check runs at the next millisecond
    with pytest.raises(uid.WorkerIdLost):
        gen.next_id()


def test_unreachable_etcd_is_a_clear_error() -> None:
    with (
        coord.connect("127.0.0.1:1", timeout=0.5) as provider,
        pytest.raises(uid.WorkerIdUnavailable, match="could not get a worker ID") as info,
    ):
        uid.from_coord(provider, _service())
    assert isinstance(info.value.__cause__, coord.CoordError)
