"""The Alembic ``env.py`` printed in docs/db.md works as written: extracted from the page, it
migrates PostgreSQL up and down with the connection configured by a ``db.yaml`` in
``IM_INFRA_CONFIG_DIR``, and prints the SQL in offline mode."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, make_url
from sqlalchemy.pool import NullPool

REPO = Path(__file__).resolve().parents[4]
SERVICE = "it-alembic"

REVISION = '''"""create the doc-test table"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "{table}",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(50), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("{table}")
'''


def documented_env_py() -> str:
    """The ``python`` block of the "Migrations with Alembic" section of docs/db.md."""
    page = (REPO / "docs" / "db.md").read_text(encoding="utf-8")
    section = page.split("## Migrations with Alembic", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "docs/db.md: no python block in the Alembic section"
    return match.group(1)


@pytest.fixture
def database(pg_url: str) -> Iterator[str]:
    """A PostgreSQL database of the test's own (Alembic's version table included)."""
    name = f"it_alembic_{uuid.uuid4().hex[:8]}"
    admin = create_engine(pg_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    try:
        yield make_url(pg_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.dispose()


@pytest.fixture
def project(tmp_path: Path, database: str) -> tuple[Path, dict[str, str], str]:
    pytest.importorskip("alembic")
    table = "doc_users"
    env_py = documented_env_py()
    placeholder = "from myservice.models import metadata"
    assert placeholder in env_py, "the documented env.py no longer imports the user's metadata"
    (tmp_path / "migrations" / "versions").mkdir(parents=True)
    (tmp_path / "migrations" / "env.py").write_text(
        env_py.replace(placeholder, "from doc_models import metadata"), encoding="utf-8"
    )
    (tmp_path / "migrations" / "versions" / "0001_create.py").write_text(
        REVISION.replace("{table}", table), encoding="utf-8"
    )
    (tmp_path / "doc_models.py").write_text(
        "from sqlalchemy import MetaData\n\nmetadata = MetaData()\n", encoding="utf-8"
    )
    (tmp_path / "alembic.ini").write_text(
        "[alembic]\nscript_location = migrations\n", encoding="utf-8"
    )
    config_dir = tmp_path / "config" / SERVICE
    config_dir.mkdir(parents=True)
    (config_dir / "db.yaml").write_text(f"dsn: {database}\n", encoding="utf-8")
    env = {
        k: v for k, v in os.environ.items() if k != "IM_INFRA_ETCD_ENDPOINTS"
    }  # the file fallback, not the config center
    env.update(
        IM_INFRA_CONFIG_DIR=str(tmp_path / "config"),
        IM_INFRA_SERVICE=SERVICE,
        PYTHONPATH=str(tmp_path),
    )
    return tmp_path, env, table


def alembic(project: tuple[Path, dict[str, str], str], *args: str) -> str:
    cwd, env, _ = project
    proc = subprocess.run(
        [sys.executable, "-m", "alembic", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_documented_env_py_migrates_up_and_down(
    project: tuple[Path, dict[str, str], str], database: str
) -> None:
    _, _, table = project
    engine = create_engine(database, poolclass=NullPool)
    try:
        alembic(project, "upgrade", "head")
        assert table in inspect(engine).get_table_names()
        alembic(project, "downgrade", "base")
        assert table not in inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_documented_env_py_prints_sql_offline(project: tuple[Path, dict[str, str], str]) -> None:
    _, _, table = project
    sql = alembic(project, "upgrade", "head", "--sql")
    assert f"CREATE TABLE {table}" in sql
