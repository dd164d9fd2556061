"""Metric attributes of statements: the operation keyword, never the SQL text."""

from __future__ import annotations

import pytest

from im_infra.db._internal.metrics import StatementAttributes, operation_name


@pytest.mark.parametrize(
    ("statement", "expected"),
    [
        ("SELECT users.id FROM users WHERE users.id = %(id)s", "SELECT"),
        ("  \n(select 1) UNION (select 2)", "SELECT"),
        ("insert into t values (?)", "INSERT"),
        ("SAVEPOINT sa_savepoint_1", "SAVEPOINT"),
        ("COMMIT;", "COMMIT"),
        ("VACUUM", None),
        ("", None),
    ],
)
def test_operation_name(statement: str, expected: str | None) -> None:
    assert operation_name(statement) == expected


def test_attributes_are_prebound_and_carry_no_sql() -> None:
    attrs = StatementAttributes("postgresql")
    first = attrs("SELECT name FROM users WHERE id = %(id)s")
    assert first == {"db.system.name": "postgresql", "db.operation.name": "SELECT"}
    assert attrs("SELECT name FROM users WHERE id = %(id)s") is first  # cached per statement
    assert attrs("SELECT 1") is first  # one dict per operation name
    assert attrs("VACUUM") == {"db.system.name": "postgresql"}
    failed = attrs.failed("INSERT INTO t VALUES (1)", ValueError("boom"))
    assert failed == {
        "db.system.name": "postgresql",
        "db.operation.name": "INSERT",
        "error.type": "ValueError",
    }
