"""OpenAI `POST /v1/moderations`, answered by a text-classification model.

Each of the classifier's labels is a category. Labels that mean "nothing wrong" (`safe`, `ok`,
`neutral`, `non-toxic`, ...) are not categories; an input is flagged when its best label is a
category scoring at least `FLAG_THRESHOLD`.
"""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Depends, Request, Response

from openmaas.api.deps import EngineDep, PrincipalDep, ServicesDep, caller
from openmaas.api.json_body import StrictJSONRoute
from openmaas.api.metering import meter, reserve_tokens
from openmaas.api.responses import json_response, mark_model
from openmaas.errors import InvalidRequest
from openmaas.protocol.common import as_list
from openmaas.protocol.openai import ModerationRequest, ModerationResponse
from openmaas.tasks.text_classification import TEXT_CLASSIFICATION

router = APIRouter(route_class=StrictJSONRoute, tags=["openai"], dependencies=[Depends(caller)])

FLAG_THRESHOLD = 0.5
SAFE_LABELS = frozenset(
    {"safe", "ok", "clean", "neutral", "normal", "none", "non-toxic", "non_toxic", "not_toxic",
     "nontoxic", "harmless", "benign", "acceptable", "label_0", "0", "negative_class"}
)  # fmt: skip


@router.post("/v1/moderations", response_model=ModerationResponse)
async def create_moderation(
    body: ModerationRequest,
    request: Request,
    engine: EngineDep,
    services: ServicesDep,
    who: PrincipalDep,
) -> Response:
    model = body.model or services.settings.moderation_model
    if not model:
        raise InvalidRequest(
            "model: no moderation model is configured; pass a text-classification model "
            "name, or set OPENMAAS_MODERATION_MODEL",
            param="model",
        )
    texts = as_list(body.input)
    await reserve_tokens(request, lambda: engine.token_bound(TEXT_CLASSIFICATION, texts, None))
    served = await engine.infer(TEXT_CLASSIFICATION, model, texts, caller=who, truncate=True)
    mark_model(request, served.version)
    meter(request, served.version, input_tokens=served.prompt_tokens, items=len(served.results))
    results = []
    for ranking in served.results:
        scores = {r.label: r.score for r in ranking if r.label.lower() not in SAFE_LABELS}
        best = ranking[0]
        flagged = best.label.lower() not in SAFE_LABELS and best.score >= FLAG_THRESHOLD
        results.append(
            {
                "flagged": flagged,
                "categories": {label: s >= FLAG_THRESHOLD for label, s in scores.items()},
                "category_scores": scores,
            }
        )
    tokens = served.prompt_tokens
    payload = {
        "id": f"modr-{uuid.uuid4().hex}",
        "model": model,
        "results": results,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    return json_response(payload, served.version)
