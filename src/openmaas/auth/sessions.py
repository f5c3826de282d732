"""Console sessions: a browser signs in with an API key once and then holds a random session
token in an HttpOnly cookie instead of the key.

A session remembers the id of the key it was made from, never the key: each request made with
it is the key's (`AuthService.principal_of_key` reads the key's scopes, limits, revocation and
expiry from the store), so revoking the key ends every session made from it and a session can
never do more than its key. Sessions live in the database (`console_sessions`), so every server
process sharing it accepts the same cookie, and signing out in one ends the session in all of
them. Tokens are kept as SHA-256 digests: the table holds nothing a browser could present.
Expired rows are deleted when they are next presented and, all of them, at each sign-in.

Example::

    sessions = ConsoleSessions(db, ttl_s=8 * 3600)
    started = sessions.create(principal)   # started.token goes into the cookie, once
    session = sessions.get(started.token)  # None once expired or ended
    sessions.end(started.token)            # sign-out
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import delete, select

from openmaas.auth.entities import Principal
from openmaas.store.database import Database
from openmaas.store.tables import ConsoleSessionRow

TOKEN_BYTES = 32  # 256 bits: guessing one is not an attack worth counting


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    key_id: int
    project: str
    csrf_token: str  # sent back by the page on every change (X-CSRF-Token)
    expires_at: float  # the clock's seconds (wall clock by default)

    def csrf_matches(self, presented: str | None) -> bool:
        return presented is not None and hmac.compare_digest(
            presented.encode(), self.csrf_token.encode()
        )


@dataclass(frozen=True, slots=True)
class StartedSession:
    token: str  # the cookie's value: exists here and in the browser's cookie jar only
    session: ConsoleSession


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _moment(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _seconds(moment: datetime) -> float:
    # SQLite hands timestamps back without their zone; they were written in UTC.
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


class ConsoleSessions:
    """The console sessions of every server process on `db`. `clock` returns seconds (tests
    pass their own to step past an expiry without waiting). Each method is one short
    transaction: call them off the event loop."""

    def __init__(self, db: Database, ttl_s: float, *, clock: Callable[[], float] = time.time):
        self.db = db
        self.ttl_s = ttl_s
        self.clock = clock

    def create(self, principal: Principal) -> StartedSession:
        """A new session acting as `principal`'s key; ends at the key's own expiry if sooner."""
        now = self.clock()
        expires_at = now + self.ttl_s
        if principal.expires_at is not None:
            expires_at = min(expires_at, principal.expires_at.timestamp())
        expires_at = _seconds(_moment(expires_at))  # to the microsecond, as stored
        session = ConsoleSession(
            key_id=principal.key_id,
            project=principal.project,
            csrf_token=secrets.token_urlsafe(TOKEN_BYTES),
            expires_at=expires_at,
        )
        token = secrets.token_urlsafe(TOKEN_BYTES)
        with self.db.transaction() as db:
            db.execute(
                delete(ConsoleSessionRow).where(ConsoleSessionRow.expires_at <= _moment(now))
            )
            db.add(
                ConsoleSessionRow(
                    token_sha256=_digest(token),
                    key_id=session.key_id,
                    project=session.project,
                    csrf_token=session.csrf_token,
                    created_at=_moment(now),
                    expires_at=_moment(expires_at),
                )
            )
        return StartedSession(token, session)

    def get(self, token: str) -> ConsoleSession | None:
        """The live session of `token`; None (and deleted) once it has expired."""
        digest = _digest(token)
        with self.db.transaction() as db:
            row = db.scalar(
                select(ConsoleSessionRow).where(ConsoleSessionRow.token_sha256 == digest)
            )
            if row is None:
                return None
            expires_at = _seconds(row.expires_at)
            if self.clock() >= expires_at:
                db.delete(row)
                return None
            return ConsoleSession(row.key_id, row.project, row.csrf_token, expires_at)

    def end(self, token: str) -> bool:
        """Sign-out: the token is no longer accepted. True when it was a live session."""
        digest = _digest(token)
        with self.db.transaction() as db:
            ended = db.execute(
                delete(ConsoleSessionRow).where(ConsoleSessionRow.token_sha256 == digest)
            )
            return bool(getattr(ended, "rowcount", 0))

    def end_key(self, key_id: int) -> int:
        """End every session made from `key_id`; how many there were."""
        with self.db.transaction() as db:
            ended = db.execute(delete(ConsoleSessionRow).where(ConsoleSessionRow.key_id == key_id))
            return int(getattr(ended, "rowcount", 0))

    def sweep(self) -> int:
        """Delete every expired session; how many there were."""
        with self.db.transaction() as db:
            swept = db.execute(
                delete(ConsoleSessionRow).where(
                    ConsoleSessionRow.expires_at <= _moment(self.clock())
                )
            )
            return int(getattr(swept, "rowcount", 0))

    def seconds_left(self, session: ConsoleSession) -> int:
        return max(0, int(session.expires_at - self.clock()))
