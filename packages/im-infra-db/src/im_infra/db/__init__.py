"""im_infra.db: SQLAlchemy 2 provider and transactions for MySQL/MariaDB, PostgreSQL and SQLite.

::

    from sqlalchemy import text
    from im_infra import db

    provider = db.new("im-logic")                 # db.yaml through coord; keyword overrides win
    provider.ping()
    with provider.transaction() as session:       # commit on success, rollback on exception
        session.execute(text("UPDATE users SET name = :n WHERE id = :id"), {"n": "a", "id": 1})
"""

from im_infra.db.aio import AsyncDBProvider, AsyncDBTransaction, new_async
from im_infra.db.config import DBConfig, Driver, Duration, TLSConfig
from im_infra.db.errors import (
    AuthenticationError,
    CommitOutcomeUnknownError,
    ConfigError,
    ConnectionLostError,
    DBConnectionError,
    DBError,
    IntegrityError,
    InvalidURLError,
    NotFoundError,
    PoolTimeoutError,
    ProviderClosedError,
    QueryError,
    ServerUnreachableError,
    StatementTimeoutError,
    TLSCertificateError,
    TLSError,
    TransactionConflictError,
    TransactionError,
    UnknownDatabaseError,
)
from im_infra.db.protocols import AsyncProvider, AsyncTransaction, Provider, Transaction
from im_infra.db.provider import DBProvider, DBTransaction, new
from im_infra.db.sharding import (
    ShardedTable,
    ShardKey,
    shard_index,
    shard_suffix,
    shard_table_name,
)

__all__ = [
    "AsyncDBProvider",
    "AsyncDBTransaction",
    "AsyncProvider",
    "AsyncTransaction",
    "AuthenticationError",
    "CommitOutcomeUnknownError",
    "ConfigError",
    "ConnectionLostError",
    "DBConfig",
    "DBConnectionError",
    "DBError",
    "DBProvider",
    "DBTransaction",
    "Driver",
    "Duration",
    "IntegrityError",
    "InvalidURLError",
    "NotFoundError",
    "PoolTimeoutError",
    "Provider",
    "ProviderClosedError",
    "QueryError",
    "ServerUnreachableError",
    "ShardKey",
    "ShardedTable",
    "StatementTimeoutError",
    "TLSCertificateError",
    "TLSConfig",
    "TLSError",
    "Transaction",
    "TransactionConflictError",
    "TransactionError",
    "UnknownDatabaseError",
    "new",
    "new_async",
    "shard_index",
    "shard_suffix",
    "shard_table_name",
]
