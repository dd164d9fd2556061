"""A library must not configure the application's logging (issue #15, item 11): every
component, used without ``clog.init()`` against real servers in a fresh process, leaves the
application's ``logging.basicConfig`` handler, the root level and loguru alone, writes nothing
to stdout, and its lines arrive as stdlib records of ``im_infra.<component>`` loggers."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

APP = Path(__file__).with_name("app_without_clog_init.py")


def test_components_without_clog_init_leave_the_apps_logging_alone(
    etcd_endpoints: str, kafka_brokers: str, redis_url: str, tmp_path: Path
) -> None:
    unique = f"clog-it-{uuid.uuid4().hex[:10]}"
    proc = subprocess.run(
        [
            sys.executable,
            str(APP),
            etcd_endpoints,
            kafka_brokers,
            redis_url,
            str(tmp_path / "app.db"),
            unique,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("RESULT "), proc.stdout[-3000:]
    result = json.loads(lines[0].removeprefix("RESULT "))
    assert result["root_handlers_unchanged"], "a component replaced the app's handlers"
    assert result["root_level"] == 10  # the DEBUG the app set
    assert result["loguru_unchanged"]
    names = set(result["names"])
    for component in ("coord", "uid", "db", "cache"):
        assert any(
            n == f"im_infra.{component}" or n.startswith(f"im_infra.{component}.") for n in names
        ), (component, sorted(names))
    # the IntegrityError the app caught, the released worker ID: nothing at error level
    assert result["errors"] == []
    assert result["text_lines"] > 0  # the lines reached the app's own handler
