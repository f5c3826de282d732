"""Request dependencies: the services on `app.state`, and who is calling.

`principal` authenticates the request's API key (once per request: FastAPI caches it);
`requires(...)` guards a whole router with the scopes its routes need, and routes that act
for a caller take `CallerDep` or `PrincipalDep`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

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
    return request.client.host if request.client else ""


async def principal(request: Request) -> Principal:
    """The authenticated caller (a key and its project); 401 without a valid key."""
    found: Principal | None = getattr(request.state, "principal", None)
    if found is not None:
        return found
    active = _services(request)
    if active.settings.dev_no_auth:
        found = DEV_PRINCIPAL
    else:
        found = await active.authenticator.authenticate(
            presented_key(request.headers), client_address(request)
        )
        # 429 when over a rate limit or quota; what remains goes out as x-ratelimit-* headers
        # (the metering middleware adds them to the response).
        request.state.ratelimit = await active.limits.check(found)
    # Kept on the request for the metering middleware, which runs outside the routes; the
    # routes hand it to the services explicitly.
    request.state.principal = found
    return found


PrincipalDep = Annotated[Principal, Depends(principal)]


async def caller(who: PrincipalDep) -> Caller:
    return Caller(actor=who.actor, principal=who)


def requires(
    *read: Scope, write: tuple[Scope, ...] | None = None
) -> Callable[[Request, Principal], Awaitable[None]]:
    """A router guard: any of `read` for GET/HEAD, any of `write` for other methods.

    Without `write`, `read` applies to every method. An empty `read` only authenticates.
    """

    async def guard(request: Request, who: PrincipalDep) -> None:
        needed = read if write is None or request.method in ("GET", "HEAD") else write
        if needed and not any(scopes_cover(who.scopes, scope) for scope in needed):
            names = " or ".join(repr(scope.value) for scope in needed)
            raise PermissionDenied(
                f"this API key lacks the {names} scope", param="scope", code="insufficient_scope"
            )

    return guard


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
