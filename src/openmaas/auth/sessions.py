"""Console sessions: a browser signs in with an API key once and then holds a random session
token in an HttpOnly cookie instead of the key.

A session remembers the id of the key it was made from, never the key: each request made with
it is the key's (`AuthService.principal_of_key` reads the key's scopes, limits, revocation and
expiry from the store), so revoking the key ends every session made from it and a session can
never do more than its key. Tokens are kept as SHA-256 digests, so this table holds nothing a
browser could present. Sessions live in the server's memory: a restart signs everyone out,
which costs a sign-in and keeps no secret on disk.

Example::

    sessions = ConsoleSessions(ttl_s=8 * 3600)
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

from openmaas.auth.entities import Principal

# Beyond this many live sessions the oldest is dropped: memory stays bounded whatever signs in.
MAX_SESSIONS = 10_000
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


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class ConsoleSessions:
    """The live console sessions of one server process. `clock` returns seconds (tests pass
    their own to step past an expiry without waiting)."""

    def __init__(self, ttl_s: float, *, clock: Callable[[], float] = time.time) -> None:
        self.ttl_s = ttl_s
        self.clock = clock
        self._sessions: dict[bytes, ConsoleSession] = {}

    def create(self, principal: Principal) -> StartedSession:
        """A new session acting as `principal`'s key; ends at the key's own expiry if sooner."""
        expires_at = self.clock() + self.ttl_s
        if principal.expires_at is not None:
            expires_at = min(expires_at, principal.expires_at.timestamp())
        session = ConsoleSession(
            key_id=principal.key_id,
            project=principal.project,
            csrf_token=secrets.token_urlsafe(TOKEN_BYTES),
            expires_at=expires_at,
        )
        token = secrets.token_urlsafe(TOKEN_BYTES)
        if len(self._sessions) >= MAX_SESSIONS:
            self._sessions.pop(next(iter(self._sessions)))
        self._sessions[_digest(token)] = session
        return StartedSession(token, session)

    def get(self, token: str) -> ConsoleSession | None:
        """The live session of `token`; None (and forgotten) once it has expired."""
        digest = _digest(token)
        session = self._sessions.get(digest)
        if session is None:
            return None
        if self.clock() >= session.expires_at:
            del self._sessions[digest]
            return None
        return session

    def end(self, token: str) -> bool:
        """Sign-out: the token is no longer accepted. True when it was a live session."""
        return self._sessions.pop(_digest(token), None) is not None

    def end_key(self, key_id: int) -> int:
        """End every session made from `key_id` (its key was revoked); how many were live."""
        doomed = [d for d, s in self._sessions.items() if s.key_id == key_id]
        for digest in doomed:
            del self._sessions[digest]
        return len(doomed)

    def seconds_left(self, session: ConsoleSession) -> int:
        return max(0, int(session.expires_at - self.clock()))
