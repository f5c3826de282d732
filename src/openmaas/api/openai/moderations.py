"""OpenAI `POST /v1/moderations`, answered by a text-classification model.

The classifier's labels are mapped onto OpenAI's 13 categories by the version's mapping
(`tasks/moderation.py`: the `moderation_categories` param, else defaults for the usual
toxicity label sets); each result also carries the classifier's own labels
(`model_categories`, `model_category_scores`, OpenMaaS extensions).
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
from openmaas.tasks.moderation import CATEGORIES, CategoryMapping
from openmaas.tasks.text_classification import TEXT_CLASSIFICATION

router = APIRouter(route_class=StrictJSONRoute, tags=["openai"], dependencies=[Depends(caller)])

# Every category applies to text, the only input this route takes.
TEXT_ONLY = {category: ["text"] for category in CATEGORIES}


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
    mapping = CategoryMapping.for_version(served.version.params)
    results = []
    for ranking in served.results:
        verdict = mapping.judge(ranking)
        results.append(
            {
                "flagged": verdict.flagged,
                "categories": verdict.categories,
                "category_scores": verdict.category_scores,
                "category_applied_input_types": TEXT_ONLY,
                "model_categories": verdict.label_flags,
                "model_category_scores": verdict.label_scores,
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
