"""Console sessions expire, end on sign-out, and end no later than their key."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from openmaas.auth.entities import Principal
from openmaas.auth.scopes import Scope
from openmaas.auth.sessions import MAX_SESSIONS, ConsoleSessions


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def principal(expires_at: datetime | None = None) -> Principal:
    return Principal("default", 7, "abc", (Scope.INFERENCE,), expires_at=expires_at)


def test_a_session_expires_after_its_ttl() -> None:
    clock = Clock()
    sessions = ConsoleSessions(ttl_s=60, clock=clock)
    started = sessions.create(principal())
    assert sessions.get(started.token) == started.session
    assert sessions.seconds_left(started.session) == 60
    clock.now += 59.9
    assert sessions.get(started.token) is not None
    clock.now += 0.1
    assert sessions.get(started.token) is None
    clock.now -= 30  # forgotten once expired, whatever the clock says after
    assert sessions.get(started.token) is None


def test_a_session_ends_no_later_than_its_key() -> None:
    clock = Clock()
    sessions = ConsoleSessions(ttl_s=3600, clock=clock)
    key_expiry = datetime.fromtimestamp(clock.now, UTC) + timedelta(seconds=10)
    started = sessions.create(principal(key_expiry))
    assert sessions.seconds_left(started.session) == 10


def test_sign_out_ends_the_session_and_tokens_are_not_kept() -> None:
    sessions = ConsoleSessions(ttl_s=60)
    started = sessions.create(principal())
    other = sessions.create(principal())
    assert started.token != other.token
    assert started.session.csrf_token != other.session.csrf_token
    assert sessions.end(started.token) is True
    assert sessions.get(started.token) is None
    assert sessions.end(started.token) is False
    assert sessions.get(other.token) is not None
    assert started.token.encode() not in repr(sessions.__dict__).encode()


def test_the_csrf_token_must_match_exactly() -> None:
    session = ConsoleSessions(ttl_s=60).create(principal()).session
    assert session.csrf_matches(session.csrf_token)
    assert not session.csrf_matches(None)
    assert not session.csrf_matches("")
    assert not session.csrf_matches(session.csrf_token[:-1])


def test_the_table_is_bounded() -> None:
    sessions = ConsoleSessions(ttl_s=60)
    first = sessions.create(principal())
    for _ in range(MAX_SESSIONS):
        sessions.create(principal())
    assert sessions.get(first.token) is None
