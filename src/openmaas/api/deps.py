"""Request dependencies: the services on `app.state`, and who is calling.

Every admin router depends on `caller`; authentication (a later layer) replaces its body
without touching the routes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from openmaas.catalog.service import CatalogService
from openmaas.registry.service import RegistryService
from openmaas.services import Services
from openmaas.serving.engine import InferenceEngine


@dataclass(frozen=True, slots=True)
class Caller:
    actor: str  # recorded in history: who registered, moved or edited


# Dependencies are `async def` although they do not await: FastAPI runs a plain `def`
# dependency in its thread pool, two thread hand-offs per request that cost more CPU than
# a small inference (measured in benchmarks/embeddings_serving.py).


async def caller(request: Request) -> Caller:
    return Caller(actor="anonymous")


def _services(request: Request) -> Services:
    value: Services = request.app.state.services
    return value


async def services(request: Request) -> Services:
    return _services(request)


async def registry(request: Request) -> RegistryService:
    return _services(request).registry


async def catalog(request: Request) -> CatalogService:
    return _services(request).catalog


async def engine(request: Request) -> InferenceEngine:
    return _services(request).engine


CallerDep = Annotated[Caller, Depends(caller)]
RegistryDep = Annotated[RegistryService, Depends(registry)]
CatalogDep = Annotated[CatalogService, Depends(catalog)]
ServicesDep = Annotated[Services, Depends(services)]
EngineDep = Annotated[InferenceEngine, Depends(engine)]
