"""db.yaml from the config center (etcd through coord), merged global < service < overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from im_infra import coord, db

pytestmark = pytest.mark.integration


def test_new_reads_db_yaml_from_etcd(
    etcd_endpoints: str, unique: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = f"{unique}-svc"
    monkeypatch.setenv("IM_INFRA_ENV", unique)  # the documents live under this test's env
    database = tmp_path / "from-etcd.db"
    with coord.connect(etcd_endpoints, service=service, env=unique, timeout=3) as cp:
        try:
            cp.config.set("global/db.yaml", "driver: sqlite\nslowThreshold: 300ms\npoolSize: 3\n")
            cp.config.set(f"{service}/db.yaml", f"database: {database}\npoolSize: 5\n")
            with db.new(service, coord=cp, max_overflow=2) as provider:
                assert provider.config.driver == "sqlite"
                assert provider.config.slow_threshold == pytest.approx(0.3)
                assert provider.config.pool_size == 5
                assert provider.config.max_overflow == 2
                with provider.session() as s:
                    assert s.execute(text("SELECT 1")).scalar_one() == 1
            assert database.exists()
            cp.config.set(f"{service}/db.yaml", "poolSize: zero\n")
            with pytest.raises(db.ConfigError, match="poolSize"):
                db.new(service, coord=cp)
        finally:
            cp.client.delete(cp.config.root, prefix=True)
