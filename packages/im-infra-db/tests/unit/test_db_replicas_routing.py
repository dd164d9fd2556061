"""Replica routing logic without servers: statement classification, round robin over usable
replicas, lag and failures, read-your-writes per context, and the replicas' derived configs.
The behaviour against a real streaming replica is in
packages/im-infra-db/tests/integration/test_replicas.py."""

from __future__ import annotations

import contextvars
import json
import time
from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, create_engine, delete, insert, select, text
from sqlalchemy.orm import Session

from im_infra import clog, db
from im_infra.db._internal.replicas import (
    Router,
    is_plain_read,
    lag_of,
    replica_config,
)
from im_infra.db._internal.target import Target

t = Table("t", MetaData(), Column("id", Integer, primary_key=True))


@pytest.mark.parametrize(
    ("clause", "read"),
    [
        (select(t), True),
        (select(t).with_for_update(), False),
        (select(t).with_for_update(read=True), False),
        (insert(t), False),
        (delete(t), False),
        (text("SELECT 1"), True),
        (text("  (select id from t)"), True),
        (text("SELECT id FROM t FOR UPDATE"), False),
        (text("select id from t for share"), False),
        (text("SELECT id FROM t LOCK IN SHARE MODE"), False),
        (text("SELECT * INTO t2 FROM t"), False),
        (text("UPDATE t SET id = 1"), False),
        (None, False),
    ],
)
def test_is_plain_read(clause: object, read: bool) -> None:
    assert is_plain_read(clause) is read


def make_router(count: int = 3, **config: object) -> Router:
    engines = [create_engine("sqlite://") for _ in range(count + 1)]
    targets = [Target("postgresql", f"r{i}", 5432, "d", "u") for i in range(count)]
    settings = db.ReplicasConfig.model_validate(
        {"endpoints": [{"port": 1}], "readYourWrites": 0.2, **config}
    )
    return Router(
        engines[0], list(zip(engines[1:], targets, strict=True)), settings, clog.get_logger("t")
    )


def test_round_robin_skips_unusable_and_lagging_replicas() -> None:
    router = make_router(3, maxLag=2)
    assert [router.pick() for _ in range(4)] == [0, 1, 2, 0]
    router.checked(1, 5.0)  # lag beyond maxLag
    router.down(2, ConnectionRefusedError("refused"))
    assert [router.pick() for _ in range(3)] == [0, 0, 0]
    router.checked(1, 0.5)
    router.checked(2, None)  # replication not running
    assert [router.pick() for _ in range(2)] == [1, 0]
    router.down(0, OSError())
    router.down(1, OSError())
    assert router.pick() is None


def test_sessions_route_and_pin() -> None:
    router = make_router(2)
    with Session() as s:
        first = router.bind_for(s, select(t))
        assert first in router.binds
        assert router.bind_for(s, select(t)) is first  # one replica per session
        assert router.bind_for(s, insert(t)) is router.primary
        assert router.bind_for(s, select(t)) is router.primary  # after its write
    with Session() as s:
        router.down(0, OSError())
        router.down(1, OSError())
        assert router.bind_for(s, select(t)) is router.primary  # none left


def test_read_your_writes_is_per_context_and_expires() -> None:
    router = make_router(1)

    def write_then_read() -> bool:
        router.mark_write()
        with Session() as s:
            return router.bind_for(s, select(t)) is router.primary

    assert contextvars.copy_context().run(write_then_read)
    with Session() as s:
        assert router.bind_for(s, select(t)) is router.binds[0]  # this context did not write

    def expires() -> bool:
        router.mark_write()
        time.sleep(0.25)
        with Session() as s:
            return router.bind_for(s, select(t)) is router.binds[0]

    assert contextvars.copy_context().run(expires)


def test_lag_of() -> None:
    assert lag_of("postgresql", [(None,)]) == 0.0
    assert lag_of("postgresql", [(3.5,)]) == 3.5

    class Row:
        def __init__(self, seconds: int | None) -> None:
            self._mapping = {"Seconds_Behind_Master": seconds}

    assert lag_of("mysql", []) == 0.0
    assert lag_of("mysql", [Row(7)]) == 7.0
    assert lag_of("mysql", [Row(None)]) is None


def test_replica_configs_inherit_the_primary() -> None:
    primary = db.DBConfig.model_validate(
        {
            "driver": "postgresql",
            "host": "p",
            "user": "u",
            "password": "pw",
            "database": "d",
            "pool_size": 3,
        }
    )
    replica = replica_config(primary, db.ReplicaEndpoint(host="r", port=6543))
    assert (replica.host, replica.port, replica.user, replica.database) == ("r", 6543, "u", "d")
    assert replica.password.get_secret_value() == "pw" and replica.pool_size == 3
    assert replica.replicas.endpoints == []
    with_dsn = db.DBConfig(dsn="postgresql+psycopg://u:pw@p:5432/d")  # type: ignore[arg-type]
    derived = replica_config(with_dsn, db.ReplicaEndpoint(port=5433))
    assert derived.dsn is not None
    assert derived.dsn.get_secret_value() == "postgresql+psycopg://u:pw@p:5433/d"
    with pytest.raises(db.ConfigError, match="sqlite"):
        db.DBProvider(
            db.DBConfig.model_validate({"driver": "sqlite", "replicas": {"endpoints": [{}]}})
        )


def test_replicas_config_is_validated() -> None:
    with pytest.raises(ValueError, match="checkInterval"):
        db.ReplicasConfig(check_interval=0)
    with pytest.raises(ValueError, match="extra"):
        db.ReplicasConfig.model_validate({"endpoints": [{"hots": "x"}]})


def test_skip_reasons_never_carry_the_password(log_lines: Any) -> None:
    router = make_router(1)
    router.states[0].target = Target("postgresql", "r0", 5432, "d", "u", secrets=("s3cret",))
    router.down(0, OSError("could not connect with password s3cret"))
    assert "s3cret" not in router.states[0].reason
    assert "s3cret" not in json.dumps(log_lines())
