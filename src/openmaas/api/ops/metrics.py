"""Prometheus metrics at `/metrics`."""

from __future__ import annotations

from fastapi import APIRouter, Response

from openmaas.api.deps import ServicesDep
from openmaas.observability.metrics import CONTENT_TYPE

router = APIRouter(tags=["operations"])


@router.get("/metrics", response_class=Response)
def metrics(services: ServicesDep) -> Response:
    return Response(services.metrics.render(), media_type=CONTENT_TYPE)
