"""TF Serving `:predict` over task contracts: what one instance is for a task, and what one
prediction is. A task is served here when it has an entry in `ADAPTERS`: text classifiers
and embedding models take strings, image classifiers nested pixel arrays (height x width x
channels, in the model's own pixel range, as `model.predict` takes them) or `{"b64": ...}`
encoded image files.

Example::

    adapter = predict_adapter(version)  # WrongTask for a task without one
    texts = adapter.decode(["a great film", {"b64": "Ym9yaW5n"}], "instances", version.params)
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from openmaas.errors import InvalidRequest, WrongTask
from openmaas.protocol.predict import SignatureDef, TensorDim, TensorInfo, TensorShape
from openmaas.registry.entities import ModelVersion
from openmaas.tasks.contract import TaskContract
from openmaas.tasks.embedding import EMBEDDING
from openmaas.tasks.image_classification import IMAGE_CLASSIFICATION, ImageInput
from openmaas.tasks.tensors import ModelFacts
from openmaas.tasks.text_classification import TEXT_CLASSIFICATION, LabelScore, known_labels

AnyContract = TaskContract[Any, Any, Any]
# (predictions, the label of each score column or None)
Encoded = tuple[list[Any], list[str] | None]


@dataclass(frozen=True, slots=True)
class PredictAdapter:
    contract: AnyContract
    what: str  # one instance, as the error messages describe it
    # (rows, field, the version's params) -> the task's inputs
    decode: Callable[[Sequence[Any], str, Mapping[str, Any]], Any]
    encode: Callable[[Sequence[Any], ModelFacts], Encoded]


def decode_texts(rows: Sequence[Any], field: str, params: Mapping[str, Any]) -> list[str]:
    """One text per row: a string, `{"b64": ...}` (TF Serving's binary strings) or an object
    naming the model's one input (`{"text": ...}`); a 400 names the first bad row."""
    if not rows:
        raise InvalidRequest(f"{field} is empty; send at least one text", param=field)
    return [_text(row, f"{field}[{index}]") for index, row in enumerate(rows)]


def _text(row: Any, where: str) -> str:
    if isinstance(row, dict) and len(row) == 1 and "b64" not in row:
        row = next(iter(row.values()))  # {"input_name": value}: the model's one input
    if isinstance(row, dict) and set(row) == {"b64"} and isinstance(row["b64"], str):
        try:
            row = base64.b64decode(row["b64"], validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise InvalidRequest(f"{where}: b64 is not base64 of UTF-8 text", param=where) from None
    if not isinstance(row, str):
        raise InvalidRequest(
            f"{where} is {_kind(row)}; this model takes one string per instance "
            '(or {"b64": "..."})',
            param=where,
        )
    if not row.strip():
        raise InvalidRequest(f"{where} is empty; every instance needs some text", param=where)
    return row


def decode_images(rows: Sequence[Any], field: str, params: Mapping[str, Any]) -> list[ImageInput]:
    """One image per row: `{"b64": ...}` (an encoded file, decoded later under the server's
    image limits) or pixels, H x W x C or H x W. Pixels are read in the model's own input
    range when the version records one (`pixel_max`: a Keras model's, 1 or 255), else as the
    v2 protocol reads them (integers 0-255, floats in [0, 1])."""
    if not rows:
        raise InvalidRequest(f"{field} is empty; send at least one image", param=field)
    scale = params.get("pixel_max")
    pixel_max = float(scale) if isinstance(scale, int | float) and scale > 0 else None
    return [_image(row, f"{field}[{index}]", pixel_max) for index, row in enumerate(rows)]


def _image(row: Any, where: str, pixel_max: float | None) -> ImageInput:
    if isinstance(row, dict) and len(row) == 1 and "b64" not in row:
        row = next(iter(row.values()))  # {"input_name": value}: the model's one input
    if isinstance(row, dict) and set(row) == {"b64"} and isinstance(row["b64"], str):
        try:
            return base64.b64decode(row["b64"], validate=True)
        except binascii.Error:
            raise InvalidRequest(f"{where}: b64 is not base64", param=where) from None
    if not isinstance(row, list):
        raise InvalidRequest(
            f"{where} is {_kind(row)}; this model takes one image per instance: pixels as "
            'nested arrays (height x width x channels) or {"b64": "<an encoded image file>"}',
            param=where,
        )
    try:
        pixels = np.asarray(row)
    except ValueError:  # rows of different lengths
        pixels = np.asarray([], dtype=object)
    if pixels.dtype.kind not in "iuf" or pixels.ndim not in (2, 3):
        raise InvalidRequest(
            f"{where} is not an array of pixel values of shape height x width x channels "
            "(or height x width): every row the same length, every value a number",
            param=where,
        )
    if pixels.ndim == 3 and pixels.shape[2] not in (1, 3):
        raise InvalidRequest(
            f"{where}: pixels of shape {list(pixels.shape)}, {pixels.shape[2]} channels; send "
            "1 (grey) or 3 (RGB) channels per pixel",
            param=where,
        )
    if pixel_max is None:
        if pixels.dtype.kind == "f":
            return pixels.astype(np.float32)  # checked in [0, 1] when decoded
        top = 255.0
    else:
        top = pixel_max
    if not np.isfinite(pixels).all() or pixels.min() < 0 or pixels.max() > top:
        raise InvalidRequest(
            f"{where}: pixel values must lie in [0, {top:g}] (the model's input range"
            f"{'' if pixel_max is not None else ' for integers; floats in [0, 1]'})",
            param=where,
        )
    if pixels.dtype.kind in "iu" and top == 255.0:
        return pixels.astype(np.uint8)  # as v2's UINT8 pixels
    scaled: ImageInput = (pixels / top).astype(np.float32)
    return scaled


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return f"an object with keys {sorted(value)[:5]}"
    return type(value).__name__


def encode_scores(results: Sequence[list[LabelScore]], facts: ModelFacts) -> Encoded:
    """Each prediction is the class scores in label order (as a Keras classifier's softmax
    gives them); the order is `labels`."""
    labels = known_labels(facts) or sorted({s.label for ranking in results for s in ranking})
    column = {label: i for i, label in enumerate(labels)}
    rows = np.zeros((len(results), len(labels)), dtype=np.float64)
    for row, ranking in enumerate(results):
        for item in ranking:
            if item.label in column:
                rows[row, column[item.label]] = item.score
    return rows.tolist(), list(labels)


def encode_vectors(results: Sequence[Any], facts: ModelFacts) -> Encoded:
    return [np.asarray(v, dtype=np.float64).tolist() for v in results], None


ADAPTERS: dict[str, PredictAdapter] = {
    TEXT_CLASSIFICATION.name: PredictAdapter(
        TEXT_CLASSIFICATION, "a string", decode_texts, encode_scores
    ),
    EMBEDDING.name: PredictAdapter(EMBEDDING, "a string", decode_texts, encode_vectors),
    IMAGE_CLASSIFICATION.name: PredictAdapter(
        IMAGE_CLASSIFICATION, "an image", decode_images, encode_scores
    ),
}


def signature(version: ModelVersion, facts: ModelFacts) -> SignatureDef:
    """The `serving_default` signature of a model `:predict` serves: one input (strings, or
    float pixels of the recorded input shape) and one output (class scores or vectors)."""
    task = predict_adapter(version).contract.name
    if task == IMAGE_CLASSIFICATION.name:
        shape = facts.params.get("input_shape")
        dims = list(shape) if isinstance(shape, list) and len(shape) == 3 else [None] * 3
        inputs = {"image": _tensor("DT_FLOAT", [None, *dims], "image")}
    else:
        inputs = {"text": _tensor("DT_STRING", [None], "text")}
    if task == EMBEDDING.name:
        width = getattr(facts.model, "embedding_dimensions", None)
        outputs = {"embedding": _tensor("DT_FLOAT", [None, width], "embedding")}
    else:
        labels = known_labels(facts)
        outputs = {"scores": _tensor("DT_FLOAT", [None, len(labels) if labels else None], "scores")}
    return SignatureDef(inputs=inputs, outputs=outputs)


def _tensor(dtype: str, shape: Sequence[Any], name: str) -> TensorInfo:
    sizes = [str(size) if isinstance(size, int) else "-1" for size in shape]
    return TensorInfo(
        dtype=dtype,
        tensor_shape=TensorShape(dim=[TensorDim(size=size) for size in sizes]),
        name=f"serving_default_{name}:0",
    )


def predict_adapter(version: ModelVersion) -> PredictAdapter:
    adapter = ADAPTERS.get(version.task)
    if adapter is None:
        served = ", ".join(sorted(ADAPTERS))
        raise WrongTask(
            f"model '{version.model}' is a {version.task} model; :predict serves {served} "
            "models (use the task's /v1 route or /v2 for the others)",
            param="model",
            task=version.task,
        )
    return adapter
