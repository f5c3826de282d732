"""Fast JSON responses for inference routes, and the headers every inference response carries."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request, Response

from openmaas.registry.entities import ModelVersion

# The version that computed a response, for clients that asked for `name` or `name@alias`.
VERSION_HEADER = "OpenMaaS-Model-Version"


def json_response(payload: Any, version: ModelVersion | None = None, status: int = 200) -> Response:
    """orjson serializes numpy arrays directly: embeddings go out without a Python float list."""
    headers = {VERSION_HEADER: f"{version.model}:{version.version}"} if version else None
    return Response(
        orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def mark_model(request: Request, version: ModelVersion) -> None:
    """Label this request's metrics with the model that served it."""
    request.state.model = version.model
