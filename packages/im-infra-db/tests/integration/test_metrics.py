"""db metrics against real MariaDB, PostgreSQL and SQLite: a known workload, exact deltas.

Values are cumulative for the whole test session (one SDK MeterProvider), so every assertion
compares before/after. Pools are told apart by a per-test service name (the pool name is
``<service>@<server>``).
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import insert, select
from sqlalchemy.engine import make_url

from im_infra import db

from .conftest import Schema

pytestmark = pytest.mark.integration

DURATION = "db.client.operation.duration"
SLOW = "im_infra.db.slow_queries"
ERRORS = "im_infra.db.errors"
CONNECTIONS = "db.client.connection.count"
TINY = 1e-9  # every statement is "slow"


def _system(db_url: str) -> str:
    return make_url(db_url).get_backend_name()


def _op(system: str, operation: str) -> dict[str, Any]:
    return {"db.system.name": system, "db.operation.name": operation}


def _pool(probe: Any, provider: Any, state: str) -> float:
    return float(
        probe.value(
            CONNECTIONS,
            **{
                "db.client.connection.pool.name": provider._core.pool_name,
                "db.client.connection.state": state,
            },
        )
    )


def _integrity_errors(probe: Any, system: str) -> float:
    return float(probe.value(ERRORS, **{"db.system.name": system, "error.type": "IntegrityError"}))


def _failed_inserts(probe: Any, system: str) -> int:
    points = probe.points(DURATION, **_op(system, "INSERT"))
    return sum(p.count for p in points if "error.type" in dict(p.attributes))


def test_durations_slow_queries_and_errors(
    metrics_probe: Any, db_url: str, schema: Schema, unique: str
) -> None:
    system = _system(db_url)
    users = schema.users
    with db.new(unique, dsn=db_url, slow_threshold=TINY) as provider:
        provider.create_all(schema.metadata)
        try:
            selects = metrics_probe.count(DURATION, **_op(system, "SELECT"))
            inserts = metrics_probe.count(DURATION, **_op(system, "INSERT"))
            slow = metrics_probe.value(SLOW, **_op(system, "SELECT"))
            integrity = _integrity_errors(metrics_probe, system)
            failed = _failed_inserts(metrics_probe, system)

            with provider.transaction() as s:
                s.execute(insert(users).values(name="alice", balance=1))
            with provider.session() as s:
                for _ in range(3):
                    s.execute(select(users.c.balance).where(users.c.name == "alice")).scalar_one()
            for _ in range(2):  # duplicate unique name → IntegrityError raised to the caller
                with pytest.raises(db.IntegrityError), provider.transaction() as s:
                    s.execute(insert(users).values(name="alice", balance=2))

            assert metrics_probe.count(DURATION, **_op(system, "SELECT")) - selects == 3
            assert metrics_probe.count(DURATION, **_op(system, "INSERT")) - inserts == 3
            assert metrics_probe.value(SLOW, **_op(system, "SELECT")) - slow == 3
            assert _integrity_errors(metrics_probe, system) - integrity == 2
            assert _failed_inserts(metrics_probe, system) - failed == 2
        finally:
            provider.drop_all(schema.metadata)


def test_slow_queries_not_counted_under_threshold(
    metrics_probe: Any, db_url: str, schema: Schema, unique: str
) -> None:
    system = _system(db_url)
    with db.new(unique, dsn=db_url, slow_threshold=60) as provider:
        provider.ping()  # the first connection runs the dialect's own setup queries
        slow = metrics_probe.value(SLOW, **{"db.system.name": system})
        selects = metrics_probe.count(DURATION, **_op(system, "SELECT"))
        for _ in range(4):
            with provider.session() as s:
                s.execute(select(1)).scalar_one()
        assert metrics_probe.count(DURATION, **_op(system, "SELECT")) - selects == 4
        assert metrics_probe.value(SLOW, **{"db.system.name": system}) - slow == 0


def test_pool_used_and_idle(metrics_probe: Any, db_url: str, unique: str) -> None:
    with db.new(unique, dsn=db_url, pool_size=3) as provider:
        provider.ping()
        assert (_pool(metrics_probe, provider, "used"), _pool(metrics_probe, provider, "idle")) == (
            0,
            1,
        )
        with provider.session() as s1, provider.session() as s2:
            s1.execute(select(1)).scalar_one()
            s2.execute(select(1)).scalar_one()
            assert _pool(metrics_probe, provider, "used") == 2
            assert _pool(metrics_probe, provider, "idle") == 0
        assert _pool(metrics_probe, provider, "used") == 0
        assert _pool(metrics_probe, provider, "idle") == 2
    provider.close()  # idempotent
    # a closed provider is no longer reported
    assert (
        metrics_probe.points(
            CONNECTIONS, **{"db.client.connection.pool.name": provider._core.pool_name}
        )
        == []
    )


async def test_async_provider_metrics(
    metrics_probe: Any, db_url: str, schema: Schema, unique: str
) -> None:
    system = _system(db_url)
    users = schema.users
    async with db.new_async(unique, dsn=db_url, slow_threshold=TINY) as provider:
        await provider.create_all(schema.metadata)
        try:
            selects = metrics_probe.count(DURATION, **_op(system, "SELECT"))
            slow = metrics_probe.value(SLOW, **_op(system, "SELECT"))
            integrity = _integrity_errors(metrics_probe, system)
            async with provider.transaction() as s:
                await s.execute(insert(users).values(name="bob", balance=1))
            async with provider.session() as s:
                for _ in range(5):
                    await s.execute(select(users.c.name))
                assert _pool(metrics_probe, provider, "used") == 1
            assert _pool(metrics_probe, provider, "used") == 0
            assert _pool(metrics_probe, provider, "idle") == 1
            with pytest.raises(db.IntegrityError):
                async with provider.transaction() as s:
                    await s.execute(insert(users).values(name="bob", balance=2))

            assert metrics_probe.count(DURATION, **_op(system, "SELECT")) - selects == 5
            assert metrics_probe.value(SLOW, **_op(system, "SELECT")) - slow == 5
            assert _integrity_errors(metrics_probe, system) - integrity == 1
        finally:
            await provider.drop_all(schema.metadata)
    await provider.close()  # idempotent
    assert (
        metrics_probe.points(
            CONNECTIONS, **{"db.client.connection.pool.name": provider._core.pool_name}
        )
        == []
    )
