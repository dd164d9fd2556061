"""im_infra.db: SQLAlchemy 2 provider and transactions for MySQL/MariaDB, PostgreSQL and SQLite.

::

    from sqlalchemy import text
    from im_infra import db

    provider = db.new("im-logic")                 # db.yaml through coord; keyword overrides win
    provider.ping()
    with provider.transaction() as session:       # commit on success, rollback on exception
        session.execute(text("UPDATE users SET name = :n WHERE id = :id"), {"n": "a", "id": 1})
"""

from im_infra.db.aio import AsyncDBProvider, AsyncDBTransaction
from im_infra.db.config import (
    DBConfig,
    Driver,
    Duration,
    ReplicaEndpoint,
    ReplicasConfig,
    TLSConfig,
)
from im_infra.db.errors import (
    AuthenticationError,
    CommitOutcomeUnknownError,
    ConfigError,
    ConnectionLostError,
    DBConnectionError,
    DBError,
    DriverNotInstalledError,
    IntegrityError,
    InvalidURLError,
    NotFoundError,
    OutboxError,
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
from im_infra.db.factory import new, new_async
from im_infra.db.outbox import (
    AsyncOutbox,
    Outbox,
    create_outbox_table,
    drop_outbox_table,
    outbox_table,
)
from im_infra.db.outbox_relay import (
    AsyncOutboxRelay,
    AsyncPublisher,
    DeliveryReport,
    MessageFactory,
    OutboxEvent,
    OutboxRelay,
    OutboxStats,
    Publisher,
)
from im_infra.db.protocols import AsyncProvider, AsyncTransaction, Provider, Transaction
from im_infra.db.provider import DBProvider, DBTransaction
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
    "AsyncOutbox",
    "AsyncOutboxRelay",
    "AsyncProvider",
    "AsyncPublisher",
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
    "DeliveryReport",
    "Driver",
    "DriverNotInstalledError",
    "Duration",
    "IntegrityError",
    "InvalidURLError",
    "MessageFactory",
    "NotFoundError",
    "Outbox",
    "OutboxError",
    "OutboxEvent",
    "OutboxRelay",
    "OutboxStats",
    "PoolTimeoutError",
    "Provider",
    "ProviderClosedError",
    "Publisher",
    "QueryError",
    "ReplicaEndpoint",
    "ReplicasConfig",
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
    "create_outbox_table",
    "drop_outbox_table",
    "new",
    "new_async",
    "outbox_table",
    "shard_index",
    "shard_suffix",
    "shard_table_name",
]
