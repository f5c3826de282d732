"""The console's routes: sign-in, sign-out, the pages and their static files, under `/ui`.

Signing in exchanges an API key for a session cookie (HttpOnly, SameSite=Strict, Secure when
the request came over TLS, with a Max-Age): the key is checked as the API checks it (the
brute-force guard included) and then forgotten; the browser keeps only the cookie, which
JavaScript cannot read. Only JSON is taken, from a page of this origin, so no other site's
form can sign a browser in with a key of its choosing.

Example::

    install_console(app, services)  # beside the authentication middleware, in build_app
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route, Router
from starlette.staticfiles import StaticFiles

from openmaas.api.authentication import SESSION_CALLER
from openmaas.api.deps import client_address
from openmaas.api.ui.pages import PAGE_BY_NAME, PAGE_HEADERS, ConsolePages, Page, may_open
from openmaas.api.ui.session_middleware import (
    SESSION_COOKIE,
    SESSION_STATE,
    TOKEN_STATE,
    ConsoleSessionMiddleware,
    session_token,
)
from openmaas.auth.entities import Principal
from openmaas.auth.http import MAX_KEY_HEADER_CHARS
from openmaas.auth.sessions import ConsoleSession, ConsoleSessions
from openmaas.errors import InvalidRequest, PermissionDenied
from openmaas.wiring import Services

ROOT = Path(__file__).parent
SIGN_IN_PAGE = "/ui/sign-in"


class SignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key: Annotated[str, Field(min_length=1, max_length=MAX_KEY_HEADER_CHARS)]


@dataclass(frozen=True, slots=True)
class Console:
    """What the console's routes share, on `app.state.console`."""

    services: Services
    sessions: ConsoleSessions
    pages: ConsolePages


def _console(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


def _signed_in(request: Request) -> tuple[Principal, ConsoleSession] | None:
    principal = request.scope.get(SESSION_CALLER)
    session = request.scope.get("state", {}).get(SESSION_STATE)
    if isinstance(principal, Principal) and isinstance(session, ConsoleSession):
        return principal, session
    return None


def _same_origin(request: Request) -> bool:
    """A browser names the page's origin in `Origin` on every POST; other clients send none."""
    origin = request.headers.get("origin")
    host = request.headers.get("host", "")
    return origin is None or origin in (f"{request.url.scheme}://{host}",)


async def sign_in(request: Request) -> Response:
    console = _console(request)
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise InvalidRequest('sign in with a JSON body: {"key": "<API key>"}')
    if not _same_origin(request):
        raise PermissionDenied("sign in from this server's own sign-in page", code="bad_origin")
    try:
        body = SignIn.model_validate_json(await request.body())
    except ValidationError:
        raise InvalidRequest(
            f'sign in with a JSON body: {{"key": "<API key of at most '
            f'{MAX_KEY_HEADER_CHARS} characters>"}}',
            param="key",
        ) from None
    principal = await console.services.authenticator.authenticate(body.key, client_address(request))
    previous = session_token(request.headers)
    if previous is not None:
        await asyncio.to_thread(console.sessions.end, previous)
    started = await asyncio.to_thread(console.sessions.create, principal)
    seconds = console.sessions.seconds_left(started.session)
    response = JSONResponse(
        {
            "project": principal.project,
            "key_prefix": principal.actor,
            "scopes": [scope.value for scope in principal.scopes],
            "expires_in": seconds,
        }
    )
    response.set_cookie(
        SESSION_COOKIE,
        started.token,
        max_age=seconds,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    response.headers["Cache-Control"] = "no-store"
    return response


async def sign_out(request: Request) -> Response:
    """End the session server-side (the middleware checked its CSRF token) and drop the
    cookie. Without a live session there is nothing to end: the cookie is dropped all the same."""
    token = request.scope.get("state", {}).get(TOKEN_STATE)
    if isinstance(token, str):
        await asyncio.to_thread(_console(request).sessions.end, token)
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response


async def sign_in_page(request: Request) -> Response:
    if _signed_in(request) is not None:
        return RedirectResponse("/ui/", status_code=303)
    return HTMLResponse(_console(request).pages.render_sign_in(), headers=PAGE_HEADERS)


def _page_route(page: Page) -> Route:
    async def show(request: Request) -> Response:
        signed_in = _signed_in(request)
        if signed_in is None:
            return RedirectResponse(SIGN_IN_PAGE, status_code=303)
        principal, session = signed_in
        console = _console(request)
        html = console.pages.render(
            page,
            principal,
            session,
            seconds_left=console.sessions.seconds_left(session),
            values=dict(request.path_params),
        )
        status = 200 if may_open(principal, page) else 403
        return HTMLResponse(html, status_code=status, headers=PAGE_HEADERS)

    return Route(page.path.removeprefix("/ui"), show, methods=["GET"], name=page.name)


def console_router(static_dir: Path) -> Router:
    return Router(
        routes=[
            Route("/sign-in", sign_in_page, methods=["GET"]),
            Route("/session", sign_in, methods=["POST"]),
            Route("/session/end", sign_out, methods=["POST"]),
            *[_page_route(page) for page in PAGE_BY_NAME.values()],
            Mount("/static", app=StaticFiles(directory=static_dir), name="static"),
        ]
    )


def install_console(app: FastAPI, services: Services) -> None:
    """Serve the console at /ui and accept its session cookie. Call right after adding the
    authentication middleware: the session middleware must run before it."""
    sessions = ConsoleSessions(services.db, ttl_s=services.settings.console_session_minutes * 60)
    pages = ConsolePages(ROOT)
    app.state.console = Console(services, sessions, pages)
    app.add_middleware(ConsoleSessionMiddleware, services=services, sessions=sessions)
    app.mount("/ui", console_router(pages.static_dir))
