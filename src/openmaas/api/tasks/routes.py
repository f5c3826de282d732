"""Task routes for what OpenAI's API lacks: `/v1/classify` (texts, or images: `images.py`),
`/v1/ner`, `/v1/translate`, `/v1/summarize` and `/v1/rerank`."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Request, Response

from openmaas.api.deps import EngineDep, PrincipalDep, caller
from openmaas.api.json_body import StrictJSONRoute
from openmaas.api.metering import meter, reserve_tokens
from openmaas.api.responses import json_response, mark_model
from openmaas.api.tasks.images import MULTIPART_BODY, ImageUploadRoute, image_bytes
from openmaas.auth.entities import Principal
from openmaas.protocol.common import as_list
from openmaas.protocol.tasks import (
    ClassifyRequest,
    ClassifyResponse,
    NerRequest,
    NerResponse,
    RerankRequest,
    RerankResponse,
    SummarizeRequest,
    TextResponse,
    TranslateRequest,
)
from openmaas.serving.engine import InferenceEngine, Served
from openmaas.tasks.contract import TaskContract
from openmaas.tasks.image_classification import IMAGE_CLASSIFICATION
from openmaas.tasks.rerank import RERANK, RerankQuery
from openmaas.tasks.seq2seq import Seq2SeqParams
from openmaas.tasks.summarization import SUMMARIZATION
from openmaas.tasks.text_classification import TEXT_CLASSIFICATION, LabelScore
from openmaas.tasks.token_classification import TOKEN_CLASSIFICATION
from openmaas.tasks.translation import TRANSLATION

router = APIRouter(
    route_class=StrictJSONRoute, prefix="/v1", tags=["tasks"], dependencies=[Depends(caller)]
)


def _list(model: str, tokens: int, data: list[dict[str, object]]) -> dict[str, object]:
    return {
        "object": "list",
        "model": model,
        "data": data,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


async def classify(
    body: ClassifyRequest, request: Request, engine: EngineDep, who: PrincipalDep
) -> Response:
    parts = body.images()
    served: Served[list[LabelScore]]
    if parts is not None:
        images = await asyncio.to_thread(image_bytes, parts)
        served = await engine.infer(IMAGE_CLASSIFICATION, body.model, images, caller=who)
    else:
        texts = body.texts()
        await reserve_tokens(request, lambda: engine.token_bound(TEXT_CLASSIFICATION, texts, None))
        served = await engine.infer(
            TEXT_CLASSIFICATION, body.model, texts, caller=who, truncate=body.truncate
        )
    mark_model(request, served.version)
    _meter(request, served)
    data: list[dict[str, object]] = []
    for index, ranking in enumerate(served.results):
        kept = ranking[: body.top_k] if body.top_k else ranking
        data.append(
            {
                "index": index,
                "label": ranking[0].label,
                "score": ranking[0].score,
                "labels": [{"label": r.label, "score": r.score} for r in kept],
            }
        )
    return json_response(_list(body.model, served.prompt_tokens, data), served.version)


# Images come as content parts or multipart uploads (`images.py`), so the route is added with
# its own route class and the multipart form documented beside the JSON body.
router.add_api_route(
    "/classify",
    classify,
    methods=["POST"],
    response_model=ClassifyResponse,
    route_class_override=ImageUploadRoute,
    openapi_extra=MULTIPART_BODY,
)


@router.post("/ner", response_model=NerResponse)
async def extract_entities(
    body: NerRequest, request: Request, engine: EngineDep, who: PrincipalDep
) -> Response:
    texts = as_list(body.input)
    await reserve_tokens(request, lambda: engine.token_bound(TOKEN_CLASSIFICATION, texts, None))
    served = await engine.infer(
        TOKEN_CLASSIFICATION, body.model, texts, caller=who, truncate=body.truncate
    )
    mark_model(request, served.version)
    _meter(request, served)
    data: list[dict[str, object]] = [
        {
            "index": index,
            "entities": [
                {"text": e.text, "label": e.label, "start": e.start, "end": e.end, "score": e.score}
                for e in entities
            ],
        }
        for index, entities in enumerate(served.results)
    ]
    return json_response(_list(body.model, served.prompt_tokens, data), served.version)


@router.post("/translate", response_model=TextResponse)
async def translate(
    body: TranslateRequest, request: Request, engine: EngineDep, who: PrincipalDep
) -> Response:
    params = Seq2SeqParams(
        max_tokens=body.max_tokens,
        source_language=body.source_language,
        target_language=body.target_language,
    )
    return await _texts_out(
        TRANSLATION, body.model, as_list(body.input), params, request, engine, who
    )


@router.post("/summarize", response_model=TextResponse)
async def summarize(
    body: SummarizeRequest, request: Request, engine: EngineDep, who: PrincipalDep
) -> Response:
    params = Seq2SeqParams(max_tokens=body.max_tokens, ratio=body.ratio)
    return await _texts_out(
        SUMMARIZATION, body.model, as_list(body.input), params, request, engine, who
    )


@router.post("/rerank", response_model=RerankResponse)
async def rerank(
    body: RerankRequest, request: Request, engine: EngineDep, who: PrincipalDep
) -> Response:
    documents = body.texts()
    query = RerankQuery(body.query, documents)
    await reserve_tokens(request, lambda: engine.token_bound(RERANK, query, None))
    served = await engine.infer(RERANK, body.model, query, caller=who, truncate=body.truncate)
    mark_model(request, served.version)
    _meter(request, served)
    ordered = sorted(served.results, key=lambda r: r.score, reverse=True)
    if body.top_n is not None:
        ordered = ordered[: body.top_n]
    results: list[dict[str, object]] = []
    for item in ordered:
        result: dict[str, object] = {"index": item.index, "relevance_score": item.score}
        if body.return_documents:
            result["document"] = {"text": documents[item.index]}
        results.append(result)
    tokens = served.prompt_tokens
    payload = {
        "model": body.model,
        "results": results,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    return json_response(payload, served.version)


async def _texts_out(
    task: TaskContract[Any, Seq2SeqParams, str],
    model: str,
    texts: list[str],
    params: Seq2SeqParams,
    request: Request,
    engine: InferenceEngine,
    who: Principal,
) -> Response:
    """A text-to-text task (translation, summarization): one output text per input."""
    await reserve_tokens(request, lambda: engine.token_bound(task, texts, params))
    served = await engine.infer(task, model, texts, params, caller=who)
    mark_model(request, served.version)
    _meter(request, served)
    data: list[dict[str, object]] = [
        {"index": i, "text": text} for i, text in enumerate(served.results)
    ]
    return json_response(_list(model, served.prompt_tokens, data), served.version)


def _meter(request: Request, served: Served[Any]) -> None:
    meter(request, served.version, input_tokens=served.prompt_tokens, items=len(served.results))
