"""Explanations of image classifiers: which regions of an image moved the model toward a
label. `/v1/explain` with an image.

A request names an image-classification model, one image (decoded as `/v1/classify` decodes
it: the server's image limits, the model's channels), optionally the label (`target`;
default the predicted one), the method and the grid (`rows` x `cols` regions over the image
as sent; default `grid_side` a side, fewer where the image has fewer pixels). The answer
scores every region (its box in the original image's pixels) toward the label, with the
label's probability:

- `occlusion` for any image model: each region in turn is filled with black
  (`image_regions.FILL`) and the image scored again through the model's normal
  `classify_images`; a region's score is the probability the label loses without it. A grid
  of n regions costs n + 1 forward passes.
- `integrated-gradients` (Captum) for models whose network is torch (`ImageGradientExplainer`:
  the `cnn` and `resnet` networks trained here, transformers image classifiers): the path
  integral of the gradient from a black image to the image, at the pixels the network reads
  (after its resizing and normalization), summed over channels and then into the regions
  whose pixels they come from. The scores add up to the label's probability at the image
  minus at black, within `delta`.

The default is integrated gradients where the model supports them, else occlusion. The work
is one item of the model's batcher, bounded by the server's caps on regions and steps.

Example::

    params = ImageExplainParams(grid=(4, 4))
    served = await engine.infer(IMAGE_EXPLANATION, "shapes", [png], params, caller=who)
    best = max(served.results[0].regions, key=lambda r: r.score)  # RegionScore(row=0, col=0, ...)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from openmaas.errors import InvalidRequest
from openmaas.tasks.contract import Plan, TaskContract, Usage, wrong_task
from openmaas.tasks.explanation import (
    INTEGRATED_GRADIENTS,
    METHODS,
    OCCLUSION,
    listed,
    target_choices,
)
from openmaas.tasks.image_classification import ImageClassifier, ImageInput, Pixels
from openmaas.tasks.image_regions import Floats
from openmaas.tasks.names import Task
from openmaas.tasks.text_input import TokenCounter

CLASSIFIERS = frozenset({Task.IMAGE_CLASSIFICATION.value})


@dataclass(frozen=True, slots=True)
class PixelAttributions:
    """Integrated gradients per pixel the network reads (summed over channels), with where
    each lies in the image as sent (`xs`, `ys`: its centre, in the original's pixels; same
    shape as `scores`), and `delta`: how far their sum is from the probability's rise from
    the baseline to the image."""

    scores: Floats
    xs: Floats
    ys: Floats
    delta: float


@runtime_checkable
class ImageGradientExplainer(Protocol):
    """An image classifier that can attribute with integrated gradients (a torch network)."""

    explains_with_gradients: bool

    def attribute_pixels(self, pixels: Pixels, index: int, steps: int) -> PixelAttributions:
        """Attributions toward output `index`'s probability for one decoded image."""
        ...


@dataclass(frozen=True, slots=True)
class ImageExplainParams:
    method: str | None = None  # None: integrated gradients where the model supports them
    target: str | None = None  # a label; None: the predicted one
    grid: tuple[int, int] | None = None  # (rows, cols); None: grid_side a side
    grid_side: int = 8  # the default grid's regions a side (fewer for a smaller image)
    max_regions: int = 256  # most regions a grid may have (occlusion's passes)
    steps: int = 32  # integrated gradients: points on the path from the baseline


@dataclass(frozen=True, slots=True)
class RegionScore:
    row: int
    col: int
    x: int  # the region's box in the image as sent, in pixels
    y: int
    width: int
    height: int
    score: float


@dataclass(frozen=True, slots=True)
class ImageExplanation:
    method: str
    label: str
    score: float  # the model's probability of `label` for the image, as served
    rows: int
    cols: int
    width: int  # the image's size, in pixels
    height: int
    regions: tuple[RegionScore, ...]  # row by row, left to right
    passes: int  # forward passes the explanation took
    delta: float | None  # integrated gradients: the approximation error


@dataclass(frozen=True, slots=True)
class ImageExplainItem:
    """One checked request, as the model's batcher runs it."""

    pixels: Pixels
    method: str
    target: str | None
    rows: int
    cols: int
    steps: int


def _methods() -> str:
    return " or ".join(METHODS)


class ImageExplanationTask(
    TaskContract[Sequence[ImageInput], ImageExplainParams, ImageExplanation]
):
    name = "image-explanation"
    protocol = ImageClassifier
    served_by = CLASSIFIERS

    def default_params(self) -> ImageExplainParams:
        return ImageExplainParams()

    def check_model(self, model: TokenCounter, label: str) -> None:
        if not model.tasks & CLASSIFIERS:
            raise wrong_task(model, label, self.name)

    def token_bound(self, inputs: Sequence[ImageInput], params: ImageExplainParams) -> int:
        return 0

    def usage(self, results: Sequence[ImageExplanation], prompt_tokens: int) -> Usage:
        return Usage(items=len(results))

    def plan(
        self,
        model: Any,
        inputs: Sequence[ImageInput],
        params: ImageExplainParams,
        *,
        label: str,
        truncate: bool,
    ) -> Plan:
        item = self.check(model, inputs, params, label)
        # Imported here: the runner imports this module's types.
        from openmaas.tasks.image_explanation_runner import explain_image

        def finish(
            results: list[ImageExplanation], tokens: list[int]
        ) -> tuple[list[ImageExplanation], int]:
            return results, 0

        return Plan(
            items=[item],
            run=lambda batch: [explain_image(model, one) for one in batch],
            key=self.name,
            finish=finish,
            one_at_a_time=True,
            counts_tokens=False,
        )

    def check(
        self, model: Any, inputs: Sequence[ImageInput], params: ImageExplainParams, label: str
    ) -> ImageExplainItem:
        """The request checked against the model and decoded, before it is queued (400s
        naming the field, the choices, and the server setting that bounds it)."""
        if len(inputs) != 1:
            raise InvalidRequest("explain one image at a time", param="input")
        method = params.method
        if method is not None and method not in METHODS:
            raise InvalidRequest(
                f"method '{method}' is not an explanation method; use {_methods()}",
                param="method",
            )
        gradients = isinstance(model, ImageGradientExplainer) and model.explains_with_gradients
        if method == INTEGRATED_GRADIENTS and not gradients:
            raise InvalidRequest(
                f"model '{label}' cannot be explained with {INTEGRATED_GRADIENTS}: its runtime "
                f"takes no gradients; use {OCCLUSION}",
                param="method",
            )
        method = method or (INTEGRATED_GRADIENTS if gradients else OCCLUSION)
        choices = target_choices(model)
        if params.target is not None and params.target not in choices:
            raise InvalidRequest(
                f"target '{params.target}' is not a label of model '{label}'; use one of "
                f"{listed(choices)}",
                param="target",
            )
        [pixels] = model.decode_images(list(inputs))
        height, width = int(pixels.shape[0]), int(pixels.shape[1])
        rows, cols = self.grid(params, height=height, width=width)
        return ImageExplainItem(pixels, method, params.target, rows, cols, params.steps)

    @staticmethod
    def grid(params: ImageExplainParams, *, height: int, width: int) -> tuple[int, int]:
        if params.grid is None:
            side = params.grid_side
            return min(side, height), min(side, width)
        rows, cols = params.grid
        if not (1 <= rows <= height and 1 <= cols <= width):
            raise InvalidRequest(
                f"grid {rows} x {cols}: the image is {width} x {height} pixels (width x "
                f"height); give rows from 1 to {height} and cols from 1 to {width}, so that "
                "every region holds a pixel",
                param="grid",
            )
        if rows * cols > params.max_regions:
            raise InvalidRequest(
                f"grid {rows} x {cols} has {rows * cols:,} regions; explanations take at most "
                f"{params.max_regions:,} (OPENMAAS_EXPLAIN_MAX_REGIONS): ask for a coarser grid",
                param="grid",
            )
        return rows, cols


IMAGE_EXPLANATION = ImageExplanationTask()
