"""Request dependencies: the services on `app.state`, and who is calling.

`principal` is the request's authenticated caller: the authentication middleware
(`api/authentication.py`) has checked the key before the body was read and left the principal
in the request's state; `requires(...)` guards a whole router with the scopes its routes need,
and routes that act for a caller take `CallerDep` or `PrincipalDep`. The middleware finds the
routes that need a key, and the scopes they need, from these dependencies.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request

from openmaas.auth.entities import DEFAULT_PROJECT, Principal
from openmaas.auth.http import presented_key
from openmaas.auth.scopes import Scope, scopes_cover
from openmaas.catalog.service import CatalogService
from openmaas.errors import PermissionDenied
from openmaas.registry.composition import Registry
from openmaas.serving.engine import InferenceEngine
from openmaas.wiring import Services


@dataclass(frozen=True, slots=True)
class Caller:
    actor: str  # recorded in history: who registered, moved or edited (the key's prefix)
    principal: Principal


# Dependencies are `async def` although they do not await: FastAPI runs a plain `def`
# dependency in its thread pool, two thread hand-offs per request that cost more CPU than
# a small inference (measured in benchmarks/embeddings_serving.py).


# Who calls when OPENMAAS_DEV_NO_AUTH is on: an admin of the default project.
DEV_PRINCIPAL = Principal(project=DEFAULT_PROJECT, key_id=0, prefix="dev", scopes=(Scope.ADMIN,))


def client_address(request: Request) -> str:
    """The client's address: the socket's, or a trusted proxy's X-Forwarded-For."""
    peer = request.client.host if request.client else ""
    clients = _services(request).authenticator.clients
    return clients.resolve(peer, request.headers.getlist("x-forwarded-for"))


async def authenticate(
    active: Services, headers: Mapping[str, str], address: str, state: dict[str, Any]
) -> Principal:
    """Authenticate the key in `headers` and check the caller's rate limits; leave both in
    `state` (the request's). 401, 403 or 429 as domain errors."""
    if active.settings.dev_no_auth:
        found = DEV_PRINCIPAL
    else:
        found = await active.authenticator.authenticate(presented_key(headers), address)
        # 429 when over a rate limit or quota; what remains goes out as x-ratelimit-* headers
        # (the metering middleware adds them to the response).
        state["ratelimit"] = await active.limits.check(found)
    # Kept on the request for the metering middleware, which runs outside the routes; the
    # routes hand it to the services explicitly.
    state["principal"] = found
    return found


async def principal(request: Request) -> Principal:
    """The authenticated caller (a key and its project); 401 without a valid key.

    Normally already in the request's state (the authentication middleware put it there
    before the body was read); authenticated here only for an app built without it."""
    found: Principal | None = getattr(request.state, "principal", None)
    if found is not None:
        return found
    state: dict[str, Any] = request.scope.setdefault("state", {})
    return await authenticate(_services(request), request.headers, client_address(request), state)


PrincipalDep = Annotated[Principal, Depends(principal)]


async def caller(who: PrincipalDep) -> Caller:
    return Caller(actor=who.actor, principal=who)


@dataclass(frozen=True, slots=True)
class ScopeGuard:
    """Any of `read` for GET/HEAD, any of `write` for other methods (`read` when None).

    A dependency (FastAPI calls it) that the authentication middleware also reads, to refuse
    a key without the scope before the request's body is read."""

    read: tuple[Scope, ...]
    write: tuple[Scope, ...] | None = None

    def needed(self, method: str) -> tuple[Scope, ...]:
        return self.read if self.write is None or method in ("GET", "HEAD") else self.write

    def check(self, who: Principal, method: str) -> None:
        needed = self.needed(method)
        if needed and not any(scopes_cover(who.scopes, scope) for scope in needed):
            names = " or ".join(repr(scope.value) for scope in needed)
            raise PermissionDenied(
                f"this API key lacks the {names} scope", param="scope", code="insufficient_scope"
            )

    async def __call__(self, request: Request, who: PrincipalDep) -> None:
        self.check(who, request.method)


def requires(*read: Scope, write: tuple[Scope, ...] | None = None) -> ScopeGuard:
    """A router guard: any of `read` for GET/HEAD, any of `write` for other methods.

    Without `write`, `read` applies to every method. An empty `read` only authenticates.
    """
    return ScopeGuard(tuple(read), write)


def _services(request: Request) -> Services:
    value: Services = request.app.state.services
    return value


async def services(request: Request) -> Services:
    return _services(request)


async def registry(request: Request) -> Registry:
    return _services(request).registry


async def catalog(request: Request) -> CatalogService:
    return _services(request).catalog


async def engine(request: Request) -> InferenceEngine:
    return _services(request).engine


CallerDep = Annotated[Caller, Depends(caller)]
RegistryDep = Annotated[Registry, Depends(registry)]
CatalogDep = Annotated[CatalogService, Depends(catalog)]
ServicesDep = Annotated[Services, Depends(services)]
EngineDep = Annotated[InferenceEngine, Depends(engine)]
