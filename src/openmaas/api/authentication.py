"""Authenticate before the body: the key, the caller's rate limits and the route's scopes are
checked from the request's headers, and a refusal answered, before any byte of its body is read.

FastAPI reads and parses a body before it runs a route's dependencies, so a key checked by a
dependency alone let anyone without one make the server read a whole body (256 MiB read in full
before the 401, in the audit) and never met the brute-force guard. This middleware runs the same
check (`deps.authenticate`) first, for every route whose dependencies include `deps.principal`,
and leaves the principal in the request's state, where the dependency finds it. Routes without
that dependency (the health probes, the OpenAPI documents) stay open. Which routes need a key,
and the scopes they need (`deps.requires` guards), are read from the routes themselves.

A request the server makes of itself in-process (a batch's line: `api/batch_dispatch.py`)
carries its caller in the ASGI scope (`IN_PROCESS_CALLER`), the principal of the key that
created the batch: no key to verify, but the same rate limits and scope guards. Only code in
this process can put it there: an ASGI server builds the scope of a network request from
the connection and never adds such a key.

Example::

    routes = RouteTable([(embeddings.router, requires(Scope.INFERENCE)), (health.router, None)])
    app.add_middleware(AuthenticationMiddleware, services=services, routes=routes)
"""

from __future__ import annotations

import json
import logging

from limits.errors import StorageError
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from openmaas.api.deps import authenticate
from openmaas.api.route_table import RouteTable
from openmaas.auth.entities import Principal
from openmaas.errors import CountersUnavailable, OpenMaaSError
from openmaas.observability.tracing import child_span
from openmaas.wiring import Services

logger = logging.getLogger(__name__)

# The ASGI scope's key for the caller of an in-process request.
IN_PROCESS_CALLER = "openmaas.in_process_caller"
# The caller of a request the web console's session middleware authenticated from its session
# cookie (`api/ui/session_middleware.py`): the key the session was made from, read now.
SESSION_CALLER = "openmaas.session_caller"


class AuthenticationMiddleware:
    """Refuses (401, 403, 429) a request to a route that needs a key before its body is read;
    otherwise leaves the principal (and its rate-limit status) in the request's state."""

    def __init__(self, app: ASGIApp, *, services: Services, routes: RouteTable) -> None:
        self.app = app
        self.services = services
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        entry = self.routes.match(scope)
        # No route: the app answers 404 or 405 and reads no body. Routes not in the table
        # (the OpenAPI documents) take no body either.
        if entry is None or not entry.needs.key:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        state = scope.setdefault("state", {})
        refusal: OpenMaaSError | None = None
        with child_span("openmaas.auth") as span:
            try:
                internal = scope.get(IN_PROCESS_CALLER) or scope.get(SESSION_CALLER)
                if isinstance(internal, Principal):
                    who = internal
                    state["ratelimit"] = await self.services.limits.check(who)
                    state["principal"] = who
                else:
                    peer = scope["client"][0] if scope.get("client") else ""
                    address = self.services.authenticator.clients.resolve(
                        peer, headers.getlist("x-forwarded-for")
                    )
                    who = await authenticate(self.services, headers, address, state)
                for guard in entry.needs.guards:
                    guard.check(who, scope["method"])
                span.set_attribute("openmaas.project", who.project)
            except OpenMaaSError as error:
                refusal = error
            except StorageError as error:  # Redis did not answer within its timeout
                logger.warning("rate-limit store unavailable: %s", error)
                refusal = CountersUnavailable()
            if refusal is not None:
                span.set_attribute("openmaas.refused", refusal.code)
        if refusal is not None:
            # The router never sees the request: label its metrics with the route as it would.
            scope["route"] = entry.route
            await send_error(scope, send, refusal, body_pending=_has_body(headers))
            return
        await self.app(scope, receive, send)


def _has_body(headers: Headers) -> bool:
    length = headers.get("content-length", "")
    return "transfer-encoding" in headers or (length != "" and length != "0")


async def send_error(scope: Scope, send: Send, error: OpenMaaSError, *, body_pending: bool) -> None:
    """Answer with the error, in the shape `api.errors` gives every other one."""
    path: str = scope["path"]
    # Open Inference Protocol clients read {"error": "<message>"} (see api.errors).
    shape = (
        {"error": error.message} if path == "/v2" or path.startswith("/v2/") else error.to_dict()
    )
    headers = [(b"content-type", b"application/json")]
    headers += [(name.lower().encode(), value.encode()) for name, value in error.headers.items()]
    if body_pending:
        # The body is never read: the connection cannot carry another request after it.
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": error.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": json.dumps(shape).encode()})
