"""`POST /v1/explain`: which words of a text moved a classifier or a tagger toward a label
(`tasks.explanation`). Scopes, token reservation and metering as for `/v1/classify`: the text's
tokens, once."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response

from openmaas.api.deps import EngineDep, PrincipalDep, caller
from openmaas.api.json_body import StrictJSONRoute
from openmaas.api.metering import meter, reserve_tokens
from openmaas.api.responses import json_response, mark_model
from openmaas.protocol.explanations import ExplainRequest, ExplainResponse
from openmaas.tasks.explanation import EXPLANATION, ExplainParams

router = APIRouter(
    route_class=StrictJSONRoute, prefix="/v1", tags=["tasks"], dependencies=[Depends(caller)]
)


@router.post("/explain", response_model=ExplainResponse)
async def create_explanation(
    body: ExplainRequest, request: Request, engine: EngineDep, who: PrincipalDep
) -> Response:
    settings = engine.settings
    params = ExplainParams(
        method=body.method,
        target=body.target,
        span=(body.span.start, body.span.end) if body.span else None,
        steps=settings.explain_steps,
        max_words=settings.explain_max_words,
    )
    await reserve_tokens(request, lambda: engine.token_bound(EXPLANATION, body.input, params))
    served = await engine.infer(EXPLANATION, body.model, body.input, params, caller=who)
    mark_model(request, served.version)
    meter(request, served.version, input_tokens=served.prompt_tokens, items=1)
    explanation = served.results[0]
    span = explanation.span
    tokens = served.prompt_tokens
    payload = {
        "object": "explanation",
        "model": body.model,
        "method": explanation.method,
        "target": {
            "label": explanation.label,
            "score": explanation.score,
            "span": {"start": span[0], "end": span[1]} if span else None,
        },
        "words": [
            {"text": w.text, "start": w.start, "end": w.end, "score": w.score}
            for w in explanation.words
        ],
        "passes": explanation.passes,
        "delta": explanation.delta,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    return json_response(payload, served.version)
