"""SQL text as it may appear in logs and error messages: literals redacted, length bounded."""

from __future__ import annotations

import re

MAX_SQL_CHARS = 2000
_STRING_LITERAL = re.compile(r"'(?:[^'\\]|\\.|'')*'")
_SPACE = re.compile(r"\s+")


def redact_sql(statement: str | None, limit: int = MAX_SQL_CHARS) -> str:
    """``statement`` with quoted string literals replaced by ``'?'`` and whitespace collapsed.

    Bound parameters never appear in SQLAlchemy statements (they are placeholders), so this only
    guards values written inline into the SQL text.
    """
    if not statement:
        return ""
    text = _SPACE.sub(" ", _STRING_LITERAL.sub("'?'", statement)).strip()
    if len(text) > limit:
        text = text[:limit] + f"… ({len(text) - limit} more chars)"
    return text
