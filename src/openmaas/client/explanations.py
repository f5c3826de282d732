"""Explanations: which words of a text, or which regions of an image, moved a classifier or
a tagger toward a label (`POST /v1/explain`).

Example::

    explained = client.explain("sentiment", "a gripping, beautifully shot film")
    print(explained.target.label, explained.method)
    for word in sorted(explained.words, key=lambda w: -w.score)[:3]:
        print(word.text, word.start, word.end, round(word.score, 3))

    pictured = client.explain("shapes", image=Path("square.png"), grid=(4, 4))
    best = max(pictured.regions or [], key=lambda r: r.score)
    print(best.x, best.y, best.width, best.height)
"""

from __future__ import annotations

import base64
import mimetypes
from pathlib import Path

from openmaas.client.resource import Resource
from openmaas.protocol.explanations import (
    ExplainRequest,
    ExplainResponse,
    GridIn,
    Method,
    SpanIn,
)
from openmaas.protocol.tasks import ImagePart, ImageURL


class ExplanationsResource(Resource):
    """`/v1/explain`."""

    def explain(
        self,
        model: str,
        text: str | None = None,
        *,
        image: bytes | Path | None = None,
        target: str | None = None,
        method: Method | None = None,
        span: tuple[int, int] | None = None,
        grid: tuple[int, int] | None = None,
        heatmap: bool = False,
    ) -> ExplainResponse:
        """Score every word of `text`, or every region of `image` (an image file's bytes or
        its path), toward `target` (default: the model's prediction) with `method` (default:
        integrated gradients where the model supports them, else occlusion). A tagger
        explains the entity at `span` (characters, end exclusive; default its most
        confident entity); an image is cut into `grid` (rows, cols) regions (default the
        server's) and `heatmap` adds them drawn as a PNG data URL."""
        if (text is None) == (image is None):
            raise ValueError("explain takes a text or an image: give exactly one")
        explained: str | ImagePart = _image_part(image) if image is not None else str(text)
        body = ExplainRequest(
            model=model,
            input=explained,
            target=target,
            method=method,
            span=SpanIn(start=span[0], end=span[1]) if span else None,
            grid=GridIn(rows=grid[0], cols=grid[1]) if grid else None,
            heatmap=heatmap,
        )
        payload = body.model_dump(mode="json", exclude_none=True, exclude_defaults=True)
        return self._one("POST", "/v1/explain", ExplainResponse, json=payload)


def _image_part(image: bytes | Path) -> ImagePart:
    """An image file as an OpenAI content part with a data URL."""
    guessed = None
    if isinstance(image, Path):
        guessed = mimetypes.guess_type(image.name)[0]
        image = image.read_bytes()
    # The server reads the file's own header; the media type need only be an image's.
    media_type = guessed if guessed and guessed.startswith("image/") else "image/png"
    url = f"data:{media_type};base64,{base64.b64encode(image).decode('ascii')}"
    return ImagePart(type="image_url", image_url=ImageURL(url=url))
