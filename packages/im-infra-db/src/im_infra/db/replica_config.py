"""The ``replicas`` section of ``db.yaml``: read replicas of the primary database.

::

    replicas:
      endpoints:                 # each inherits the primary's settings it does not set
        - host: 10.0.0.12
        - host: 10.0.0.13
          port: 5433
      maxLag: 5s                 # a replica further behind is skipped
      readYourWrites: 2s         # reads of a request context after its write go to the primary
      checkInterval: 1s          # health and lag check of every replica
"""

from __future__ import annotations

from pydantic import Field, field_validator

from im_infra.coord import Duration
from im_infra.db._internal.model import Model, Secret

__all__ = ["ReplicaEndpoint", "ReplicasConfig"]


class ReplicaEndpoint(Model):
    """One replica: the fields set here replace the primary's, the rest are inherited
    (user, password, database, TLS, pool and timeouts)."""

    dsn: Secret | None = None
    """A full SQLAlchemy URL of the replica (replaces host/port/user/database/params)."""
    host: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    user: str | None = None
    password: Secret | None = None
    database: str | None = None
    params: dict[str, str] | None = None


class ReplicasConfig(Model):
    """Read replicas. With endpoints, ``provider.session()`` reads (SELECT without FOR UPDATE /
    FOR SHARE) go to a healthy replica, round robin; writes, locking reads and everything in
    ``transaction()`` / ``begin()`` go to the primary."""

    endpoints: list[ReplicaEndpoint] = Field(default_factory=list)
    """The replicas; empty (the default): every statement goes to the primary."""
    max_lag: Duration = 5.0
    """A replica whose replication delay exceeds this is skipped until it catches up."""
    read_your_writes: Duration = 2.0
    """After a write (a transaction or a write in ``session()``), reads in the same request
    context (contextvars: thread or asyncio task) go to the primary for this long. 0 disables."""
    check_interval: Duration = 1.0
    """How often each replica's health and lag are checked (a connection failure on a read
    marks it down at once)."""

    @field_validator("check_interval")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("checkInterval must be > 0")
        return value
