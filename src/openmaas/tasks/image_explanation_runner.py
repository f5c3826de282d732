"""Running one image explanation on a loaded model, in the model's thread: the label as the
model predicts it (or as named), then per region of the grid its score by the item's method.

Example::

    item = IMAGE_EXPLANATION.check(model, [png], ImageExplainParams(grid=(4, 4)), "shapes:1")
    explanation = explain_image(model, item)
    explanation.label, [r.score for r in explanation.regions]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from openmaas.tasks.explanation import INTEGRATED_GRADIENTS
from openmaas.tasks.image_classification import Pixels
from openmaas.tasks.image_explanation import (
    ImageExplainItem,
    ImageExplanation,
    ImageGradientExplainer,
    RegionScore,
)
from openmaas.tasks.image_regions import grid_regions, occluded, pool
from openmaas.tasks.occlusion import CHUNK_INPUTS, occlusion

# Perturbed images held at once by occlusion: a 25-megapixel RGB image is 300 MB as floats,
# so such images go to the model one at a time, small ones CHUNK_INPUTS at a time.
OCCLUSION_CHUNK_BYTES = 256 * 1024 * 1024


def explain_image(model: Any, item: ImageExplainItem) -> ImageExplanation:
    pixels = item.pixels
    height, width = int(pixels.shape[0]), int(pixels.shape[1])
    ranking = model.classify_images([pixels])[0]
    label = item.target if item.target is not None else ranking[0].label
    score = _label_score(ranking, label)
    regions = grid_regions(height=height, width=width, rows=item.rows, cols=item.cols)
    delta: float | None = None
    if item.method == INTEGRATED_GRADIENTS:
        index = list(model.labels).index(label)
        assert isinstance(model, ImageGradientExplainer)  # checked with the request
        found = model.attribute_pixels(pixels, index, item.steps)
        scores = pool(
            found.scores,
            found.xs,
            found.ys,
            height=height,
            width=width,
            rows=item.rows,
            cols=item.cols,
        )
        passes, delta = item.steps, found.delta
    else:

        def scored(images: Sequence[Pixels]) -> list[float]:
            return [_label_score(r, label) for r in model.classify_images(list(images))]

        scores = occlusion(
            parts=len(regions),
            without=lambda i: occluded(pixels, regions[i]),
            score=scored,
            full_score=score,
            chunk_inputs=max(1, min(CHUNK_INPUTS, OCCLUSION_CHUNK_BYTES // max(1, pixels.nbytes))),
        )
        passes = len(regions) + 1
    return ImageExplanation(
        method=item.method,
        label=label,
        score=score,
        rows=item.rows,
        cols=item.cols,
        width=width,
        height=height,
        regions=tuple(
            RegionScore(r.row, r.col, r.x, r.y, r.width, r.height, float(s))
            for r, s in zip(regions, scores, strict=True)
        ),
        passes=passes,
        delta=delta,
    )


def _label_score(ranking: Sequence[Any], label: str) -> float:
    return next((float(s.score) for s in ranking if s.label == label), 0.0)
