"""`POST /v1/explain`: which words of a text moved a classifier or a tagger toward a label
(`tasks.explanation`), or which regions of an image moved an image classifier
(`tasks.image_explanation`). Scopes, token reservation and metering as for `/v1/classify`: a
text's tokens, once; an image is one item."""

from __future__ import annotations

import asyncio
import base64

from fastapi import APIRouter, Depends, Request, Response

from openmaas.api.deps import EngineDep, PrincipalDep, caller
from openmaas.api.json_body import StrictJSONRoute
from openmaas.api.metering import meter, reserve_tokens
from openmaas.api.responses import json_response, mark_model
from openmaas.api.tasks.heatmaps import heatmap_png
from openmaas.api.tasks.images import image_bytes
from openmaas.errors import InvalidRequest
from openmaas.protocol.explanations import ExplainRequest, ExplainResponse
from openmaas.protocol.tasks import ImagePart
from openmaas.tasks.explanation import EXPLANATION, ExplainParams
from openmaas.tasks.image_explanation import IMAGE_EXPLANATION, ImageExplainParams

router = APIRouter(
    route_class=StrictJSONRoute, prefix="/v1", tags=["tasks"], dependencies=[Depends(caller)]
)


@router.post("/explain", response_model=ExplainResponse)
async def create_explanation(
    body: ExplainRequest, request: Request, engine: EngineDep, who: PrincipalDep
) -> Response:
    image = body.image()
    if image is not None:
        return await _explain_image(body, image, request, engine, who)
    for field in ("grid", "heatmap"):
        if getattr(body, field):
            raise InvalidRequest(
                f"{field} is for images; a text is explained word by word: leave {field} out",
                param=field,
            )
    settings = engine.settings
    text = body.text()
    params = ExplainParams(
        method=body.method,
        target=body.target,
        span=(body.span.start, body.span.end) if body.span else None,
        steps=settings.explain_steps,
        max_words=settings.explain_max_words,
    )
    await reserve_tokens(request, lambda: engine.token_bound(EXPLANATION, text, params))
    served = await engine.infer(EXPLANATION, body.model, text, params, caller=who)
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


async def _explain_image(
    body: ExplainRequest, image: ImagePart, request: Request, engine: EngineDep, who: PrincipalDep
) -> Response:
    if body.span is not None:
        raise InvalidRequest(
            "span picks an entity of a text; an image is explained by regions (grid): "
            "leave span out",
            param="span",
        )
    settings = engine.settings
    params = ImageExplainParams(
        method=body.method,
        target=body.target,
        grid=(body.grid.rows, body.grid.cols) if body.grid else None,
        grid_side=settings.explain_image_grid,
        max_regions=settings.explain_max_regions,
        steps=settings.explain_steps,
    )
    images = await asyncio.to_thread(image_bytes, [image])
    served = await engine.infer(IMAGE_EXPLANATION, body.model, images, params, caller=who)
    mark_model(request, served.version)
    meter(request, served.version, items=1)
    explanation = served.results[0]
    heatmap = None
    if body.heatmap:
        heatmap = await asyncio.to_thread(
            heatmap_png,
            explanation.regions,
            height=explanation.height,
            width=explanation.width,
        )
    payload = {
        "object": "explanation",
        "model": body.model,
        "method": explanation.method,
        "target": {"label": explanation.label, "score": explanation.score, "span": None},
        "grid": {"rows": explanation.rows, "cols": explanation.cols},
        "image": {"width": explanation.width, "height": explanation.height},
        "regions": [
            {
                "row": r.row,
                "col": r.col,
                "x": r.x,
                "y": r.y,
                "width": r.width,
                "height": r.height,
                "score": r.score,
            }
            for r in explanation.regions
        ],
        "heatmap": (
            "data:image/png;base64," + base64.b64encode(heatmap).decode("ascii")
            if heatmap is not None
            else None
        ),
        "passes": explanation.passes,
        "delta": explanation.delta,
        "usage": {"prompt_tokens": 0, "total_tokens": 0},
    }
    return json_response(payload, served.version)
