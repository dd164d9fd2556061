"""grpc is loaded only by a process that talks to etcd.

Every package depends on coord, and coord's etcd client is built on grpcio: without care, a
service that only uses uid, cache, db or mq would load grpc's C core (tens of milliseconds and
several MB of resident memory) at import. coord imports grpc and pyetcd on first use of the etcd
client instead; each snippet below runs in a fresh interpreter (no config center configured) and
reports which of those modules it loaded. The last one uses the etcd client's module and must
load grpc: the probe can see it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

PROBE = """
import json, sys
{snippet}
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("grpc", "pyetcd")
               or m.startswith("google.protobuf"))
print(json.dumps(heavy))
"""


def loaded(snippet: str) -> list[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IM_INFRA_")}
    proc = subprocess.run(
        [sys.executable, "-c", PROBE.format(snippet=snippet)],
        capture_output=True, text=True, timeout=60, check=False, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert isinstance(result, list)
    return result


@pytest.mark.parametrize(
    "snippet",
    [
        "import im_infra.coord",
        "from im_infra import uid\nassert uid.new_generator(7).next_id() > 0",
        "from im_infra import cache\nc = cache.new('svc', address='127.0.0.1:1')\nc.close()",
        "import im_infra.db, im_infra.mq, im_infra.cache, im_infra.uid",
        "from im_infra import coord\ncoord.parse_duration('5s')",
    ],
)
def test_no_grpc_without_etcd(snippet: str) -> None:
    assert loaded(snippet) == []


def test_the_etcd_client_loads_grpc_on_first_use() -> None:
    heavy = loaded("from im_infra.coord._internal import etcd\netcd.grpc.StatusCode.OK")
    assert "grpc" in heavy
