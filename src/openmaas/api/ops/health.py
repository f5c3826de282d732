"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import text

from openmaas import __version__
from openmaas.api.deps import ServicesDep
from openmaas.api.json_body import StrictJSONRoute

router = APIRouter(route_class=StrictJSONRoute, tags=["operations"])


@router.get("/livez")
def livez() -> dict[str, str]:
    return {"status": "ok", "version": __version__}


@router.get("/readyz")
def readyz(services: ServicesDep) -> dict[str, str]:
    with services.db.engine.connect() as connection:
        connection.execute(text("SELECT 1"))
    return {"status": "ready"}
