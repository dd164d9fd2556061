"""A conversation's recent messages, read through cache-aside.

Readers call :func:`recent_messages`: the page comes from Redis, or is loaded from the table once
(concurrent readers share that load) and cached for :data:`PAGE_TTL` seconds. The logic worker
invalidates a conversation's page after storing a message into it (:func:`page_key`).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from im_infra import cache, db
from im_infra_demo.schema import CACHE_KEEP, StoredMessage

PAGE_TTL = 5.0


def page_key(conversation: str) -> str:
    return f"conv:{conversation}:page"


def recent_messages(
    c: cache.Cache, store: db.DBProvider, conversation: str
) -> list[dict[str, Any]]:
    """The newest :data:`CACHE_KEEP` messages of ``conversation``, newest first."""

    def load() -> list[dict[str, Any]]:
        with store.session() as s:
            rows = s.scalars(
                select(StoredMessage)
                .where(StoredMessage.conversation == conversation)
                .order_by(StoredMessage.msg_id.desc())
                .limit(CACHE_KEEP)
            ).all()
            return [
                {"msg_id": r.msg_id, "sender": r.sender, "text": r.text, "sent_at": r.sent_at}
                for r in rows
            ]

    page: list[dict[str, Any]] = c.aside(ttl=PAGE_TTL).get(page_key(conversation), load)
    return page
