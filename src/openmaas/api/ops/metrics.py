"""Prometheus metrics at `/metrics`."""

from __future__ import annotations

from fastapi import APIRouter, Response

from openmaas.api.deps import ServicesDep
from openmaas.api.json_body import StrictJSONRoute
from openmaas.observability.metrics import CONTENT_TYPE

router = APIRouter(route_class=StrictJSONRoute, tags=["operations"])


@router.get("/metrics", response_class=Response)
def metrics(services: ServicesDep) -> Response:
    return Response(services.metrics.render(), media_type=CONTENT_TYPE)
