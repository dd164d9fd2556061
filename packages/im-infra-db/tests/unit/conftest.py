"""Shared fixtures of the db unit tests (SQLite only: no servers)."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from im_infra import clog
from im_infra.db import DBConfig, DBProvider

LogLines = Callable[[], list[dict[str, Any]]]


@pytest.fixture
def log_lines() -> Iterator[LogLines]:
    """clog redirected to a buffer; call the fixture value to get the JSON lines so far."""
    buffer = io.StringIO()
    clog.init(service="db-tests", level="DEBUG", format="json", sink=buffer)

    def lines() -> list[dict[str, Any]]:
        return [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]

    try:
        yield lines
    finally:
        clog.init(service="db-tests", level="INFO")


@pytest.fixture
def sqlite_config(tmp_path: Path) -> DBConfig:
    return DBConfig(driver="sqlite", database=str(tmp_path / "unit.db"))


@pytest.fixture
def provider(sqlite_config: DBConfig) -> Iterator[DBProvider]:
    with DBProvider(sqlite_config, service="db-tests") as p:
        yield p
