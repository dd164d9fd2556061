"""uid's log lines on a real etcd: an error the caller receives is not also an error line."""

from __future__ import annotations

import logging
import uuid

import pytest

from im_infra import clog, coord, uid

pytestmark = pytest.mark.integration


def test_docs_shutdown_order_logs_no_error(
    etcd_endpoints: str, caplog: pytest.LogCaptureFixture
) -> None:
    """docs/uid.md's first example: the provider closes (releasing the worker ID) while the
    generator is still around. A later call raises WorkerIdLost to its caller; the normal close
    writes no error-level line (before: "worker ID lost in coord" at error)."""
    clog.shutdown()  # unconfigured clog: the lines are stdlib records caplog sees
    caplog.set_level(logging.DEBUG, logger="im_infra")
    service = f"uid-log-{uuid.uuid4().hex[:10]}"
    with coord.connect(etcd_endpoints, service=service) as p:
        gen = uid.from_coord(p, service)
        gen.next_id()
        gen.next_ids(500)
    with pytest.raises(uid.WorkerIdLost):
        gen.next_id()  # the next millisecond finds the ID released
    gen.close()
    errors = [(r.name, r.getMessage()) for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []
    names = [r.name for r in caplog.records]
    assert "im_infra.uid" in names  # the lines were captured at all
