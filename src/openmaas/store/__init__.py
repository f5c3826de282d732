"""Metadata store: SQLAlchemy 2 over SQLite (WAL, default) or PostgreSQL, migrated by Alembic."""

from openmaas.store.database import Database

__all__ = ["Database"]
