"""Authenticate a console request from its session cookie, as the key the session was made from.

A request that carries an API key (`Authorization`, `X-API-Key`) is the key's: the cookie is
not looked at. Otherwise a live session's key is read from the store (its scopes, limits,
revocation and expiry as they are now) and handed to the authentication middleware
(`api/authentication.py`, `SESSION_CALLER`), which applies the same rate limits and scope
guards as to the key itself. A change (any method but GET, HEAD, OPTIONS) made with a session
must carry the session's CSRF token in `X-CSRF-Token`: a page of another site can make the
browser send the cookie, but it cannot read the token. A session whose key was revoked or has
expired is ended here; the request then goes on without a caller and the route answers 401.

Example::

    app.add_middleware(ConsoleSessionMiddleware, services=services, sessions=sessions)
"""

from __future__ import annotations

import asyncio

from starlette.datastructures import Headers
from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Receive, Scope, Send

from openmaas.api.authentication import SESSION_CALLER, send_error
from openmaas.auth.entities import SYSTEM
from openmaas.auth.sessions import ConsoleSessions
from openmaas.errors import ApiKeyNotFound, AuthenticationFailed, PermissionDenied
from openmaas.wiring import Services

SESSION_COOKIE = "openmaas_session"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Signing in is not a change made with a session: it replaces one (see routes.sign_in).
SIGN_IN_PATH = "/ui/session"
STATIC_PREFIX = "/ui/static/"
# The request state's key for the session (the console's routes read it).
SESSION_STATE = "console_session"
TOKEN_STATE = "console_session_token"  # noqa: S105 (a state key, not a secret)


def session_token(headers: Headers) -> str | None:
    cookie = headers.get("cookie")
    if not cookie:
        return None
    return cookie_parser(cookie).get(SESSION_COOKIE) or None


class ConsoleSessionMiddleware:
    """Turns a live session cookie into the caller of its key; refuses (403) a change made with
    a session but without its CSRF token."""

    def __init__(self, app: ASGIApp, *, services: Services, sessions: ConsoleSessions) -> None:
        self.app = app
        self.services = services
        self.sessions = sessions

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(STATIC_PREFIX):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        token = session_token(headers)
        if token is None or "authorization" in headers or "x-api-key" in headers:
            await self.app(scope, receive, send)
            return
        # A store read (the sessions are shared by every process on the database): off the
        # event loop.
        session = await asyncio.to_thread(self.sessions.get, token)
        if session is None:
            await self.app(scope, receive, send)
            return
        changes = scope["method"] not in SAFE_METHODS and scope["path"] != SIGN_IN_PATH
        if changes and not session.csrf_matches(headers.get(CSRF_HEADER)):
            refused = PermissionDenied(
                "a change made with a console session needs the session's CSRF token in "
                "the X-CSRF-Token header (the console's pages send it; reload the page)",
                param="X-CSRF-Token",
                code="csrf_token_invalid",
            )
            await send_error(scope, send, refused, body_pending=True)
            return
        try:
            principal = await asyncio.to_thread(
                self.services.auth.principal_of_key, session.key_id, caller=SYSTEM
            )
        except (AuthenticationFailed, ApiKeyNotFound):
            # The key was revoked, has expired or is gone.
            await asyncio.to_thread(self.sessions.end, token)
            await self.app(scope, receive, send)
            return
        scope[SESSION_CALLER] = principal
        state = scope.setdefault("state", {})
        state[SESSION_STATE] = session
        state[TOKEN_STATE] = token
        await self.app(scope, receive, send)
