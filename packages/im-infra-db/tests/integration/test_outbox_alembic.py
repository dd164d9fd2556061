"""The outbox migration printed in docs/db.md works as written: extracted from the page, Alembic
creates the table on PostgreSQL, MariaDB and SQLite, the outbox and its relay work on it, and
the downgrade drops it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import MetaData, create_engine, inspect
from sqlalchemy.pool import NullPool

from im_infra import db

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[4]

ENV_PY = """
import os
from alembic import context
from sqlalchemy import create_engine

engine = create_engine(os.environ["OUTBOX_IT_URL"])
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=None,
                      version_table=os.environ["OUTBOX_IT_VERSIONS"])
    with context.begin_transaction():
        context.run_migrations()
"""


def documented_revision() -> str:
    page = (REPO / "docs" / "db.md").read_text(encoding="utf-8")
    section = page.split("## Transactional outbox", 1)[1]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    revision = [b for b in blocks if "create_outbox_table(op" in b]
    assert revision, "docs/db.md: no migration block in the outbox section"
    return str(revision[0])


@dataclass
class Msg:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]


class Collect:
    def __init__(self) -> None:
        self.sent: list[Msg] = []

    def send(self, msg: Msg, callback: db.DeliveryReport | None = None) -> None:
        self.sent.append(msg)
        if callback is not None:
            callback(None)

    def flush(self, timeout: float | None = None) -> int:
        return 0


@pytest.mark.parametrize("backend", ["postgresql", "mysql", "sqlite"])
def test_documented_outbox_migration(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    pytest.importorskip("alembic")
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'mig.db'}"
    else:
        url = str(request.getfixturevalue("pg_url" if backend == "postgresql" else "mysql_url"))
    name = f"itmig{uuid.uuid4().hex[:8]}_outbox"
    revision = documented_revision().replace('down_revision = "0001"', "down_revision = None")
    revision = revision.replace("create_outbox_table(op)", f"create_outbox_table(op, {name!r})")
    revision = revision.replace("drop_outbox_table(op)", f"drop_outbox_table(op, {name!r})")
    (tmp_path / "migrations" / "versions").mkdir(parents=True)
    (tmp_path / "migrations" / "env.py").write_text(ENV_PY, encoding="utf-8")
    (tmp_path / "migrations" / "versions" / "0002_outbox.py").write_text(revision, "utf-8")
    (tmp_path / "alembic.ini").write_text("[alembic]\nscript_location = migrations\n", "utf-8")
    env = {**os.environ, "OUTBOX_IT_URL": url, "OUTBOX_IT_VERSIONS": f"{name}_v"}

    def alembic(*args: str) -> None:
        proc = subprocess.run(
            [sys.executable, "-m", "alembic", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr

    engine = create_engine(url, poolclass=NullPool)
    try:
        alembic("upgrade", "head")
        inspector = inspect(engine)
        expected = db.outbox_table(MetaData(), name)
        assert {c["name"] for c in inspector.get_columns(name)} == set(expected.c.keys())
        assert {i["name"] for i in inspector.get_indexes(name)} == {
            i.name for i in expected.indexes
        }
        with db.new("it-outbox-mig", dsn=url) as provider:
            outbox = db.Outbox(provider, table=name)
            with provider.transaction():
                outbox.add("t", key="k", value=b"migrated")
            collect = Collect()
            with db.OutboxRelay(provider, collect, message=Msg, table=name) as relay:
                assert relay.run_once() == 1
            assert [m.value for m in collect.sent] == [b"migrated"]
        alembic("downgrade", "base")
        assert name not in inspect(engine).get_table_names()
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {name}_v")
        engine.dispose()
