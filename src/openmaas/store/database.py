"""Engine and sessions for SQLite (WAL, immediate transactions) and PostgreSQL.

Example::

    db = Database("sqlite:///state/openmaas.db")
    db.migrate()
    with db.transaction() as session:
        session.add(row)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from filelock import FileLock
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

# Migrations from several processes starting at once must run one at a time.
_PG_MIGRATION_LOCK_ID = 0x0E4A_A5  # arbitrary, stable advisory-lock key
SQLITE_BUSY_TIMEOUT_MS = 30_000


class Database:
    """Owns the engine; hands out sessions whose transactions serialize writers correctly."""

    def __init__(self, url: str) -> None:
        self.url = make_url(_normalize_url(url))
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        self.engine: Engine = self._create_engine()
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def _create_engine(self) -> Engine:
        if not self.is_sqlite:
            return create_engine(self.url, pool_pre_ping=True)
        if self.url.database and self.url.database != ":memory:":
            Path(self.url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(self.url, connect_args={"check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            # Let SQLAlchemy issue BEGIN itself (below) instead of pysqlite's deferred one.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(connection: Any) -> None:
            # IMMEDIATE takes the write lock up front, so read-then-write transactions from
            # several processes queue on busy_timeout instead of failing with SQLITE_BUSY.
            connection.exec_driver_sql("BEGIN IMMEDIATE")

        return engine

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session inside one transaction: committed on success, rolled back on error."""
        with self._sessions() as session, session.begin():
            yield session

    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision (safe from concurrent processes)."""
        from openmaas.store.migrate import upgrade_to_head

        if self.is_sqlite:
            database = self.url.database or ""
            if database in ("", ":memory:"):
                upgrade_to_head(self.engine)
                return
            with FileLock(database + ".migrate.lock"):
                upgrade_to_head(self.engine)
            return
        with self.engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _PG_MIGRATION_LOCK_ID})
            try:
                upgrade_to_head(self.engine)
            finally:
                connection.execute(
                    text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_MIGRATION_LOCK_ID}
                )
                connection.commit()

    def close(self) -> None:
        self.engine.dispose()


def _normalize_url(url: str) -> str:
    # `postgresql://` means psycopg2 to SQLAlchemy; we ship psycopg 3.
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url
