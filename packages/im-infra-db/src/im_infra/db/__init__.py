"""im_infra.db: SQLAlchemy 2 engine/session provider and transactions (MySQL/MariaDB, PostgreSQL, SQLite)."""

__all__: list[str] = []
