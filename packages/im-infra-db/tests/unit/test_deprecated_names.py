"""Renamed public names (docs/naming.md) still work for one minor version, with a warning."""

from __future__ import annotations

import asyncio
import importlib

import pytest

from im_infra import db
from im_infra.db import AsyncDBProvider, DBConfig, DBProvider


@pytest.mark.parametrize(
    ("module", "name"), [("im_infra.db.provider", "new"), ("im_infra.db.aio", "new_async")]
)
def test_factories_moved_to_db_factory(module: str, name: str) -> None:
    mod = importlib.import_module(module)
    with pytest.warns(DeprecationWarning, match=rf"{module}\.{name} is deprecated .*0\.2\.0"):
        old = getattr(mod, name)
    assert old is getattr(importlib.import_module("im_infra.db.factory"), name)
    assert old is getattr(db, name) and name not in mod.__all__


def test_begin_tx_is_a_deprecated_alias_of_begin(provider: DBProvider) -> None:
    assert not hasattr(db.Provider, "begin_tx") and not hasattr(db.AsyncProvider, "begin_tx")
    with pytest.warns(DeprecationWarning, match=r"begin_tx is deprecated .*0\.2\.0.*use begin"):
        tx = provider.begin_tx()
    assert isinstance(tx, db.DBTransaction)
    tx.commit()


def test_async_begin_tx_is_a_deprecated_alias_of_begin(sqlite_config: DBConfig) -> None:
    async def run() -> None:
        async with AsyncDBProvider(sqlite_config, service="db-tests") as ap:
            with pytest.warns(DeprecationWarning, match=r"begin_tx is deprecated .*use begin"):
                pending = ap.begin_tx()
            tx = await pending
            assert isinstance(tx, db.AsyncDBTransaction)
            await tx.rollback()

    asyncio.run(run())
