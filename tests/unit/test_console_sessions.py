"""Console sessions expire, end on sign-out and with their key, are swept once expired, and
keep no token a browser could present: on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from openmaas.auth.entities import SYSTEM, Principal
from openmaas.auth.scopes import Scope
from openmaas.auth.service import AuthService
from openmaas.auth.sessions import ConsoleSessions
from openmaas.store.database import Database
from openmaas.store.tables import ConsoleSessionRow

pytestmark = pytest.mark.postgres


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC).timestamp()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    database.migrate()
    yield database
    database.close()


@pytest.fixture
def auth(db: Database) -> AuthService:
    return AuthService(db, pepper=b"p" * 32)


def principal(auth: AuthService, expires_at: datetime | None = None) -> Principal:
    key, _ = auth.create_key(
        "default", "console", [Scope.INFERENCE], expires_at=expires_at, caller=SYSTEM
    )
    return Principal("default", key.id, key.prefix, (Scope.INFERENCE,), expires_at=expires_at)


def stored(db: Database) -> list[ConsoleSessionRow]:
    with db.transaction() as session:
        return list(session.scalars(select(ConsoleSessionRow)))


def test_a_session_expires_after_its_ttl(db: Database, auth: AuthService) -> None:
    clock = Clock()
    sessions = ConsoleSessions(db, ttl_s=60, clock=clock)
    started = sessions.create(principal(auth))
    assert sessions.get(started.token) == started.session
    assert sessions.seconds_left(started.session) == 60
    clock.now += 59.9
    assert sessions.get(started.token) is not None
    clock.now += 0.1
    assert sessions.get(started.token) is None
    clock.now -= 30  # deleted once expired, whatever the clock says after
    assert sessions.get(started.token) is None
    assert stored(db) == []


def test_a_session_ends_no_later_than_its_key(db: Database, auth: AuthService) -> None:
    clock = Clock()
    sessions = ConsoleSessions(db, ttl_s=3600, clock=clock)
    key_expiry = datetime.fromtimestamp(clock.now, UTC) + timedelta(seconds=10)
    started = sessions.create(principal(auth, key_expiry))
    assert sessions.seconds_left(started.session) == 10


def test_sign_out_ends_the_session_and_tokens_are_not_kept(db: Database, auth: AuthService) -> None:
    sessions = ConsoleSessions(db, ttl_s=60)
    who = principal(auth)
    started = sessions.create(who)
    other = sessions.create(who)
    assert started.token != other.token
    assert started.session.csrf_token != other.session.csrf_token
    rows = stored(db)
    assert {row.key_id for row in rows} == {who.key_id}
    assert not any(started.token in repr(vars(row)) for row in rows)
    assert sessions.end(started.token) is True
    assert sessions.get(started.token) is None
    assert sessions.end(started.token) is False
    assert sessions.get(other.token) is not None


def test_another_process_sees_the_same_sessions(db: Database, auth: AuthService) -> None:
    """Two `ConsoleSessions` over one database, each with its own engine, as two servers."""
    here = ConsoleSessions(db, ttl_s=60)
    elsewhere_db = Database(db.url.render_as_string(hide_password=False))
    try:
        elsewhere = ConsoleSessions(elsewhere_db, ttl_s=60)
        started = here.create(principal(auth))
        assert elsewhere.get(started.token) == started.session
        assert elsewhere.end(started.token) is True
        assert here.get(started.token) is None
    finally:
        elsewhere_db.close()


def test_revoking_the_key_deletes_its_sessions(db: Database, auth: AuthService) -> None:
    sessions = ConsoleSessions(db, ttl_s=60)
    revoked, kept = principal(auth), principal(auth)
    doomed = [sessions.create(revoked) for _ in range(2)]
    survivor = sessions.create(kept)
    auth.revoke_key(revoked.key_id, caller=SYSTEM)
    assert [sessions.get(s.token) for s in doomed] == [None, None]
    assert sessions.get(survivor.token) == survivor.session
    assert sessions.end_key(kept.key_id) == 1
    assert stored(db) == []


def test_expired_rows_are_swept(db: Database, auth: AuthService) -> None:
    clock = Clock()
    sessions = ConsoleSessions(db, ttl_s=60, clock=clock)
    who = principal(auth)
    for _ in range(3):
        sessions.create(who)
    clock.now += 61
    assert sessions.sweep() == 3
    sessions.create(who)
    clock.now += 61
    sessions.create(who)  # each sign-in sweeps what has expired
    assert len(stored(db)) == 1


def test_the_csrf_token_must_match_exactly(db: Database, auth: AuthService) -> None:
    session = ConsoleSessions(db, ttl_s=60).create(principal(auth)).session
    assert session.csrf_matches(session.csrf_token)
    assert not session.csrf_matches(None)
    assert not session.csrf_matches("")
    assert not session.csrf_matches(session.csrf_token[:-1])
