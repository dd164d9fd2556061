"""SQL text for logs: literals redacted, bounded length."""

from __future__ import annotations

from im_infra.db._internal.sqltext import redact_sql


def test_string_literals_are_redacted() -> None:
    sql = "UPDATE users SET password = 'hunter2', note='it''s' WHERE id = :id"
    assert redact_sql(sql) == "UPDATE users SET password = '?', note='?' WHERE id = :id"


def test_whitespace_collapsed_and_length_bounded() -> None:
    assert redact_sql("SELECT\n   1") == "SELECT 1"
    long = "SELECT " + "x, " * 2000 + "1"
    out = redact_sql(long, limit=100)
    assert out.startswith("SELECT x, x,")
    assert "more chars" in out
    assert len(out) < 130


def test_empty() -> None:
    assert redact_sql(None) == ""
    assert redact_sql("") == ""
