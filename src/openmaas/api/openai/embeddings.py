"""OpenAI `POST /v1/embeddings`."""

from __future__ import annotations

import base64
from collections.abc import Sequence

import numpy as np
from fastapi import APIRouter, Depends, Request, Response

from openmaas.api.deps import caller
from openmaas.api.json_body import StrictJSONRoute
from openmaas.api.metering import meter, reserve_tokens
from openmaas.api.responses import json_response, mark_model
from openmaas.auth.entities import Principal
from openmaas.protocol.openai import EmbeddingRequest, EmbeddingResponse
from openmaas.serving.engine import InferenceEngine
from openmaas.tasks.embedding import EMBEDDING, EmbeddingParams, FloatArray

router = APIRouter(route_class=StrictJSONRoute, tags=["openai"], dependencies=[Depends(caller)])


@router.post("/v1/embeddings", response_model=EmbeddingResponse)
async def create_embedding(body: EmbeddingRequest, request: Request) -> Response:
    # The engine straight from app.state: FastAPI spends more CPU resolving a dependency
    # (cache keys, signature checks) than the request's own bookkeeping.
    engine: InferenceEngine = request.app.state.services.engine
    who: Principal = request.state.principal  # set by the router's `caller` dependency
    inputs: list[str] | list[list[int]]
    if isinstance(body.input, str):
        inputs = [body.input]
    elif body.input and all(isinstance(v, int) for v in body.input):
        inputs = [[int(v) for v in body.input if isinstance(v, int)]]  # one list of ids
    else:
        inputs = body.input  # type: ignore[assignment]  # list[str] | list[list[int]]
    params = EmbeddingParams(dimensions=body.dimensions)
    await reserve_tokens(request, lambda: engine.token_bound(EMBEDDING, inputs, params))
    served = await engine.infer(
        EMBEDDING, body.model, inputs, params, caller=who, truncate=body.truncate
    )
    mark_model(request, served.version)
    meter(request, served.version, input_tokens=served.prompt_tokens, items=len(inputs))
    data = _encode(served.results, body.encoding_format)
    payload = {
        "object": "list",
        "data": data,
        "model": body.model,
        "usage": {"prompt_tokens": served.prompt_tokens, "total_tokens": served.prompt_tokens},
    }
    return json_response(payload, served.version)


def _encode(vectors: Sequence[FloatArray], encoding_format: str) -> list[dict[str, object]]:
    if encoding_format == "base64":
        # Little-endian float32 bytes, what the openai client decodes with numpy.
        return [
            {
                "object": "embedding",
                "index": i,
                "embedding": base64.b64encode(v.astype("<f4").tobytes()).decode("ascii"),
            }
            for i, v in enumerate(vectors)
        ]
    return [
        {"object": "embedding", "index": i, "embedding": np.asarray(v, dtype=np.float32)}
        for i, v in enumerate(vectors)
    ]
