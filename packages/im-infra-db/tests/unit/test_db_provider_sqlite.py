"""The blocking provider on SQLite: transactions, savepoints, begin, errors, logging."""

from __future__ import annotations

import contextvars
import threading
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select, text

from im_infra import clog, db
from im_infra.db import DBConfig, DBProvider

from .conftest import LogLines

metadata = MetaData()
items = Table(
    "items",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(50), nullable=False),
)


@pytest.fixture
def p(provider: DBProvider) -> DBProvider:
    provider.create_all(metadata)
    return provider


def names(p: DBProvider) -> list[str]:
    with p.session() as s:
        return list(s.scalars(select(items.c.name).order_by(items.c.id)))


def test_satisfies_the_protocols(p: DBProvider) -> None:
    assert isinstance(p, db.Provider)
    tx = p.begin()
    assert isinstance(tx, db.Transaction)
    tx.rollback()


def test_transaction_commits(p: DBProvider) -> None:
    with p.transaction() as s:
        s.execute(insert(items).values(id=1, name="a"))
    assert names(p) == ["a"]


def _insert_then_fail(p: DBProvider, error: Exception, **values: object) -> None:
    with p.transaction() as s:
        s.execute(insert(items).values(**values))
        raise error


def test_transaction_rolls_back_on_any_exception(p: DBProvider) -> None:
    with pytest.raises(ValueError, match="boom"):
        _insert_then_fail(p, ValueError("boom"), id=1, name="a")
    assert names(p) == []


def test_nested_transaction_is_a_savepoint(p: DBProvider) -> None:
    with p.transaction() as outer:
        outer.execute(insert(items).values(id=1, name="outer"))
        with pytest.raises(RuntimeError):
            _insert_then_fail(p, RuntimeError("undo inner only"), id=2, name="inner")
        with p.transaction() as inner2:
            assert inner2 is outer
            inner2.execute(insert(items).values(id=3, name="kept"))
    assert names(p) == ["outer", "kept"]


def test_error_in_nested_block_propagates_and_rolls_back_everything(p: DBProvider) -> None:
    def outer_block() -> None:
        with p.transaction() as outer:
            outer.execute(insert(items).values(id=1, name="outer"))
            _insert_then_fail(p, KeyError("x"), id=2, name="inner")

    with pytest.raises(KeyError):
        outer_block()
    assert names(p) == []


def test_other_thread_gets_its_own_transaction(p: DBProvider) -> None:
    seen: list[bool] = []
    with p.transaction() as outer:
        ctx = contextvars.copy_context()

        def worker() -> None:
            with p.transaction() as mine:
                seen.append(mine is outer)

        thread = threading.Thread(target=ctx.run, args=(worker,))
        thread.start()
        thread.join(10)
    assert seen == [False]


def test_session_leaves_commit_to_the_caller(p: DBProvider) -> None:
    with p.session() as s:
        s.execute(insert(items).values(id=1, name="uncommitted"))
    assert names(p) == []
    with p.session() as s:
        s.execute(insert(items).values(id=1, name="committed"))
        s.commit()
    assert names(p) == ["committed"]


def test_begin_commit_and_rollback(p: DBProvider) -> None:
    tx = p.begin()
    tx.session.execute(insert(items).values(id=1, name="a"))
    tx.commit()
    assert tx.finished
    tx.rollback()  # no-op after commit (Go: deferred Rollback)
    with pytest.raises(db.TransactionError, match="already committed"):
        tx.commit()
    tx2 = p.begin()
    tx2.session.execute(insert(items).values(id=2, name="b"))
    tx2.rollback()
    with pytest.raises(db.TransactionError, match="rolled back"):
        tx2.commit()
    assert names(p) == ["a"]


def test_begin_context_manager_rolls_back_unless_committed(p: DBProvider) -> None:
    with p.begin() as tx:
        tx.session.execute(insert(items).values(id=1, name="dropped"))
    with p.begin() as tx:
        tx.session.execute(insert(items).values(id=2, name="kept"))
        tx.commit()
    assert names(p) == ["kept"]


def test_integrity_error_is_translated_and_logged_at_debug(
    p: DBProvider, log_lines: LogLines
) -> None:
    with p.transaction() as s:
        s.execute(insert(items).values(id=1, name="a"))
    with clog.trace_context("trace-int-1"), pytest.raises(db.IntegrityError) as info:
        _insert_then_fail(p, AssertionError("not reached"), id=1, name="dup")
    assert "sqlite" in str(info.value)
    lines = log_lines()
    assert [line for line in lines if line["level"] in ("error", "critical")] == []
    errors = [line for line in lines if line["msg"] == "query failed"]
    assert len(errors) == 1
    assert errors[0]["level"] == "debug"  # raised to the caller: not also an error line
    assert errors[0]["trace_id"] == "trace-int-1"
    assert errors[0]["sql"].startswith("INSERT INTO items")
    assert errors[0]["error_type"] == "IntegrityError"
    assert names(p) == ["a"]


def test_not_found_is_translated(p: DBProvider) -> None:
    with pytest.raises(db.NotFoundError), p.session() as s:
        s.execute(select(items).where(items.c.id == 42)).scalar_one()


def test_sqlalchemy_errors_can_be_handled_inside_the_block(p: DBProvider) -> None:
    import sqlalchemy.exc

    with p.transaction() as s:
        s.execute(insert(items).values(id=1, name="a"))
        try:
            with s.begin_nested():
                s.execute(insert(items).values(id=1, name="dup"))
        except sqlalchemy.exc.IntegrityError:
            pass
        s.execute(insert(items).values(id=2, name="b"))
    assert names(p) == ["a", "b"]


def test_slow_queries_are_logged_with_trace_id_and_redacted_sql(
    tmp_path: Path, log_lines: LogLines
) -> None:
    cfg = DBConfig(driver="sqlite", database=str(tmp_path / "slow.db"), slow_threshold=1e-9)
    with DBProvider(cfg) as p, clog.trace_context("trace-slow-1"), p.session() as s:
        s.execute(text("SELECT 'secret-literal' AS x, :v AS y"), {"v": "bound-secret"})
    slow = [line for line in log_lines() if line["msg"] == "slow query"]
    assert slow, "no slow query line"
    line = slow[-1]
    assert line["level"] == "warning"
    assert line["trace_id"] == "trace-slow-1"
    assert line["namespace"] == "db"
    assert line["sql"] == "SELECT '?' AS x, ? AS y"
    assert line["params"] == "<redacted: 1 values>"
    assert line["elapsed_ms"] >= 0
    text_out = str(log_lines())
    assert "secret-literal" not in text_out
    assert "bound-secret" not in text_out


def test_one_statement_timer_whatever_the_slow_threshold(
    tmp_path: Path, log_lines: LogLines
) -> None:
    # One listener per execute hook: it times every statement for the duration metric and,
    # with a threshold, for the slow-query log; slowThreshold 0 only turns the log off.
    cfg = DBConfig(driver="sqlite", database=str(tmp_path / "off.db"), slow_threshold=0)
    with DBProvider(cfg) as p, p.session() as s:
        assert len(p.engine.dialect.dispatch.do_execute) == 1
        s.execute(text("SELECT 1")).scalar_one()
    assert not [line for line in log_lines() if line["msg"] == "slow query"]
    cfg_on = DBConfig(driver="sqlite", database=str(tmp_path / "on.db"))
    with DBProvider(cfg_on) as p:
        assert len(p.engine.dialect.dispatch.do_execute) == 1
        assert len(p.engine.dialect.dispatch.do_execute_no_params) == 1
        assert len(p.engine.dialect.dispatch.do_executemany) == 1
    # No ConnectionEvents on server backends (SQLite needs a "begin" hook for savepoints), so
    # SQLAlchemy's per-connection event dispatch stays off. No connection is made here.
    for driver in ("postgresql", "mysql"):
        with DBProvider(DBConfig(driver=driver, statement_timeout=1)) as p:
            assert not p.engine._has_events
            assert len(p.engine.dialect.dispatch.do_execute) == 1


def test_slow_executemany_and_no_params_statements(tmp_path: Path, log_lines: LogLines) -> None:
    cfg = DBConfig(driver="sqlite", database=str(tmp_path / "many.db"), slow_threshold=1e-9)
    with DBProvider(cfg) as p:
        p.create_all(metadata)
        with p.transaction() as s:
            s.execute(insert(items), [{"id": i, "name": f"n{i}"} for i in range(3)])
            s.connection().exec_driver_sql("SELECT 1")
    slow = [line for line in log_lines() if line["msg"] == "slow query"]
    params = {line["sql"]: line["params"] for line in slow}
    assert params["INSERT INTO items (id, name) VALUES (?, ?)"] == "<redacted: 3 rows>"
    assert params["SELECT 1"] == "none"


def test_ping_and_missing_file_directory(tmp_path: Path) -> None:
    with DBProvider(DBConfig(driver="sqlite", database=str(tmp_path / "ok.db"))) as p:
        p.ping()
    bad = DBConfig(driver="sqlite", database=str(tmp_path / "missing" / "x.db"))
    with DBProvider(bad) as p, pytest.raises(db.UnknownDatabaseError, match="missing"):
        p.ping()


def test_closed_provider_refuses_work(provider: DBProvider) -> None:
    provider.close()
    provider.close()  # idempotent
    with pytest.raises(db.ProviderClosedError):
        provider.ping()
    with pytest.raises(db.ProviderClosedError), provider.transaction():
        pass
    with pytest.raises(db.ProviderClosedError), provider.session():
        pass
    with pytest.raises(db.ProviderClosedError):
        provider.begin()


def test_drop_all(p: DBProvider) -> None:
    p.drop_all(metadata)
    with pytest.raises(db.QueryError, match="no such table"), p.session() as s:
        s.execute(select(items))
