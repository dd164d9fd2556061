"""The chat message: its wire form (JSON in Kafka) and its table."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import BigInteger, Engine, Float, MetaData, String, Text, event
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

TOPIC = "gochat.messages.upstream"
CACHE_KEEP = 50
LOGIC_SERVICE = "im-logic"
#: The logic workers' gRPC method: conversation id (UTF-8) in, JSON
#: ``{"served_by": worker, "messages": [ChatMessage fields + trace_id, newest first]}`` out.
GET_MESSAGES = "/gochat.Logic/GetMessages"


@dataclass(frozen=True)
class ChatMessage:
    msg_id: int
    conversation: str
    sender: str
    text: str
    run_id: str
    sent_at: float

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> ChatMessage:
        return cls(**json.loads(raw))


class Base(DeclarativeBase):
    metadata = MetaData()


class StoredMessage(Base):
    __tablename__ = "chat_messages"

    msg_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    conversation: Mapped[str] = mapped_column(String(64), index=True)
    sender: Mapped[str] = mapped_column(String(64))
    text: Mapped[str] = mapped_column(Text)
    run_id: Mapped[str] = mapped_column(String(32), index=True)
    trace_id: Mapped[str] = mapped_column(String(64))
    sent_at: Mapped[float] = mapped_column(Float)
    stored_at: Mapped[float] = mapped_column(Float)


def cache_key(conversation: str) -> str:
    """The conversation's sorted set of recent messages (score: message id, time-ordered)."""
    return f"conv:{conversation}:recent"


def tune_sqlite(engine: Engine) -> None:
    """For SQLite: WAL journal (readers never block the writer) and fsync at checkpoints
    only, so the embedded default database commits in well under a millisecond instead of
    one fsync per message. Other databases are left alone."""
    if engine.dialect.name != "sqlite":
        return

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    engine.dispose()  # connections opened before the listener existed
