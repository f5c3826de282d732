"""Image classification: every label with its score per image, highest first. `/v1/classify`
(images as OpenAI `image_url` content parts with data URLs, or multipart uploads) and v2
(`IMAGE`: UINT8 or FP32 pixels, H x W x C, or BYTES encoded files; `LABEL`, `SCORE`, `SCORES`
out, as text classification answers).

An input is an encoded file (bytes) or an array of pixels. The plan has the model decode
each (under the server's image limits, into float32 H x W x C in [0, 1] in the model's
channels), so a bad image is refused (400, naming `input[i]` and why) before anything is
batched. Usage counts images, not tokens.

Example::

    served = await engine.infer(IMAGE_CLASSIFICATION, "fashion-cnn", [png_bytes], caller=who)
    served.results[0][0].label  # -> "Sneaker"
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from openmaas.errors import InvalidRequest
from openmaas.tasks.contract import Plan, TaskContract, Usage
from openmaas.tasks.names import Task
from openmaas.tasks.tensors import ModelFacts, Outputs, TensorSpec
from openmaas.tasks.text_classification import TEXT_CLASSIFICATION, LabelScore

# An input as received: an encoded image file, or pixels.
ImageInput = bytes | npt.NDArray[Any]

IMAGE_INPUT = TensorSpec(
    "IMAGE",
    "UINT8",
    (-1, -1, -1, -1),
    "IMAGE (UINT8 pixels 0-255 or FP32 pixels in [0, 1], shape [N, H, W, C] or [H, W, C] "
    "with C 1 or 3; or BYTES, shape [N]: encoded image files such as PNG or JPEG)",
)
PIXEL_DATATYPES = ("UINT8", "FP32")


# Pixels as the contract hands them to a model: H x W x C float32 in [0, 1].
Pixels = npt.NDArray[np.float32]


@runtime_checkable
class ImageClassifier(Protocol):
    tasks: frozenset[str]
    labels: tuple[str, ...]

    def decode_images(self, inputs: Sequence[ImageInput]) -> list[Pixels]:
        """Each input as pixels in the model's channels (`openmaas.images.decode_inputs`
        under the server's image limits); InvalidRequest names the first bad one,
        `input[i]`, and why."""
        ...

    def classify_images(self, images: Sequence[Pixels]) -> list[list[LabelScore]]:
        """Every label with its score per image, highest first."""
        ...


class ImageClassificationTask(TaskContract[Sequence[ImageInput], None, list[LabelScore]]):
    name = Task.IMAGE_CLASSIFICATION.value
    protocol = ImageClassifier
    v2_input = IMAGE_INPUT
    v2_output_names = TEXT_CLASSIFICATION.v2_output_names

    def default_params(self) -> None:
        return None

    def plan(
        self,
        model: ImageClassifier,
        inputs: Sequence[ImageInput],
        params: None,
        *,
        label: str,
        truncate: bool,
    ) -> Plan:
        images = model.decode_images(inputs)

        def finish(
            results: list[list[LabelScore]], tokens: list[int]
        ) -> tuple[list[list[LabelScore]], int]:
            return results, 0

        return Plan(
            items=images,
            run=model.classify_images,
            key=self.name,
            finish=finish,
            counts_tokens=False,
        )

    def usage(self, results: Sequence[list[LabelScore]], prompt_tokens: int) -> Usage:
        return Usage(items=len(results))

    def token_bound(self, inputs: Sequence[ImageInput], params: None) -> int:
        return 0

    def v2_tensor(self, datatype: str, array: npt.NDArray[Any]) -> list[ImageInput]:
        if datatype == "BYTES":
            if array.ndim == 2 and array.shape[1] == 1:
                array = array[:, 0]
            if array.ndim != 1:
                raise InvalidRequest(
                    f"input IMAGE: BYTES of shape {list(array.shape)}; send shape [N], one "
                    "encoded image file per element",
                    param="inputs",
                )
            return [bytes(value) for value in array]
        if datatype not in PIXEL_DATATYPES:
            raise InvalidRequest(
                f"input IMAGE has datatype {datatype}; send {IMAGE_INPUT.description}",
                param="inputs",
            )
        if array.ndim == 3:
            array = array[None]
        if array.ndim != 4 or array.shape[0] == 0:
            raise InvalidRequest(
                f"input IMAGE has shape {list(array.shape)}; send [N, H, W, C] or [H, W, C]",
                param="inputs",
            )
        return [np.ascontiguousarray(row) for row in array]

    def v2_outputs(self, facts: ModelFacts) -> list[TensorSpec]:
        return TEXT_CLASSIFICATION.v2_outputs(facts)

    def v2_encode(self, results: Sequence[list[LabelScore]], facts: ModelFacts) -> Outputs:
        return TEXT_CLASSIFICATION.v2_encode(results, facts)


IMAGE_CLASSIFICATION = ImageClassificationTask()
