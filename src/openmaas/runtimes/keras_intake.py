"""A Keras model directory: one `.keras` file, its text preprocessing (or, for an image
classifier, what its input takes) and its label names.

Registration calls `inspect_keras_model` on the files (detection: task, safety, the
preprocessing a text model needs, label count); the runtime calls the same functions on the
stored directory, so what registered is what loads. Keras is never imported here.

Files beside the `.keras` file:

- `vocabulary.txt`: one token a line (`TextVectorization.get_vocabulary()`), for a model whose
  input is token ids; read with TextVectorization's defaults (`standardize`, `split` may be
  set in the version's params);
- `tokenizer.json`: a `keras.preprocessing.text.Tokenizer`'s `to_json()`, padded as
  `pad_sequences` does (params `padding`, `truncating`: "pre" by default, as Keras's);
- for an image classifier (`Conv2D` layers, an input of height x width x channels), nothing:
  the input's shape comes from the file's config; the param `pixel_max` says what a white
  pixel is in the model's input (255 when a `Rescaling` layer comes before the first
  convolution, as tutorials that feed raw pixels write it; else 1, for models trained on
  `x / 255`);
- `labels.txt` (one a line) or `labels.json` (a list, or {"labels": [...]}): the class names,
  in output order; else the version's `labels` param; else LABEL_0, LABEL_1, ...

Example::

    keras_file = inspect_keras_model({"model.keras": path, "vocabulary.txt": vocab})
    keras_file.task  # -> "text-classification"
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from openmaas.errors import UnsupportedSource
from openmaas.runtimes.keras_files import (
    IMAGE_LAYERS,
    KerasFile,
    keras_file_in,
    read_keras_file,
)
from openmaas.runtimes.keras_text import (
    KerasTokenizer,
    TextEncoder,
    Vectorizer,
    vocabulary_lines,
    with_special_tokens,
)
from openmaas.tasks.names import Task

VOCABULARY_FILE = "vocabulary.txt"
TOKENIZER_FILE = "tokenizer.json"
LABEL_FILES = ("labels.txt", "labels.json")
MAX_SIDE_FILE_BYTES = 64 << 20  # a vocabulary or tokenizer of millions of words
# The tasks the keras runtime serves.
SERVED_TASKS = frozenset({Task.TEXT_CLASSIFICATION.value, Task.IMAGE_CLASSIFICATION.value})
IMAGE_CHANNELS = (1, 3)  # grey or RGB: what an image converts to (`openmaas.images`)
PIXEL_MAX_PARAM = "pixel_max"
RAW_PIXEL_MAX = 255.0  # a model that rescales its input itself takes pixels as 0-255


@dataclass(frozen=True, slots=True)
class ImageInputSpec:
    """What an image classifier's input takes: H x W x C (height or width None: any), in
    `dtype`, a white pixel being `pixel_max`."""

    height: int | None
    width: int | None
    channels: int
    dtype: str
    pixel_max: float

    @property
    def shape(self) -> list[int | None]:
        return [self.height, self.width, self.channels]


def inspect_keras_model(
    files: Mapping[str, Path], params: Mapping[str, Any] | None = None
) -> KerasFile:
    """Check a Keras model's files as the runtime will load them; UnsupportedSource or
    UnsafeArtifact (400s) name what to fix."""
    name = keras_file_in(list(files))
    if name is None:
        raise UnsupportedSource("the model holds no .keras file", param="source")
    keras_file = read_keras_file(files[name])
    if keras_file.task not in SERVED_TASKS:
        layers = ", ".join(dict.fromkeys(keras_file.layer_classes)) or "none"
        raise UnsupportedSource(
            f"{name} is not a classifier this server serves from Keras (it serves "
            f"{', '.join(sorted(SERVED_TASKS))}: Embedding + LSTM/GRU/Conv1D + Dense, or "
            f"Conv2D + pooling + Dense); its layers: {layers}",
            param="source",
        )
    if keras_file.task == Task.TEXT_CLASSIFICATION.value:
        text_encoder(keras_file, files, params or {})
    if keras_file.task == Task.IMAGE_CLASSIFICATION.value:
        image_input(keras_file, params or {})
    if keras_file.output_units is not None:
        labels(files, params or {}, keras_file.output_units)
    return keras_file


def text_encoder(
    keras_file: KerasFile, files: Mapping[str, Path], params: Mapping[str, Any]
) -> TextEncoder:
    """What turns texts into the network's input (see the module docstring)."""
    vectorizer = keras_file.vectorizer
    if vectorizer is not None:
        if not keras_file.sequential:
            raise UnsupportedSource(
                f"{keras_file.path.name}: a TextVectorization layer is reproduced only at the "
                "start of a Sequential model; save the model without it and register its "
                f"vocabulary ({VOCABULARY_FILE}) beside it",
                param="file",
            )
        return Vectorizer.from_layer_config(vectorizer, _layer_vocabulary(keras_file))
    if any(i.dtype == "string" for i in keras_file.inputs):
        raise UnsupportedSource(
            f"{keras_file.path.name} takes strings, but its first layer is not a "
            "TextVectorization layer; only that preprocessing layer is reproduced here",
            param="file",
        )
    length = _sequence_length(keras_file)
    if TOKENIZER_FILE in files:
        return KerasTokenizer.from_json(
            _read_text(files[TOKENIZER_FILE]),
            sequence_length=length,
            padding=str(params.get("padding", "pre")),
            truncating=str(params.get("truncating", "pre")),
        )
    if VOCABULARY_FILE in files:
        tokens = vocabulary_lines(_read_text(files[VOCABULARY_FILE]))
        if not tokens:
            raise UnsupportedSource(f"{VOCABULARY_FILE} is empty", param="file")
        return Vectorizer(
            vocabulary=with_special_tokens(tokens, "int"),
            standardize=params.get("standardize", "lower_and_strip_punctuation"),
            split=params.get("split", "whitespace"),
            sequence_length=length,
        )
    raise UnsupportedSource(
        f"{keras_file.path.name} takes token ids: register it with its preprocessing, "
        f"{VOCABULARY_FILE} (one token a line, as TextVectorization.get_vocabulary() lists "
        f"them) or {TOKENIZER_FILE} (a keras Tokenizer's to_json()), beside the .keras file",
        param="file",
    )


def recorded_params(
    keras_file: KerasFile, files: Mapping[str, Path], params: Mapping[str, Any]
) -> dict[str, Any]:
    """What registration records on the version, read from the files: an image classifier's
    input shape, pixel scale and labels (so `:predict`, v2 and their metadata know them while
    the model is not loaded)."""
    if keras_file.task != Task.IMAGE_CLASSIFICATION.value or keras_file.output_units is None:
        return {}
    spec = image_input(keras_file, params)
    names = list(labels(files, params, keras_file.output_units))
    return {"input_shape": spec.shape, PIXEL_MAX_PARAM: spec.pixel_max, "labels": names}


def image_input(keras_file: KerasFile, params: Mapping[str, Any]) -> ImageInputSpec:
    """The image input of a Conv2D classifier, from its config; UnsupportedSource names what
    cannot be served (several inputs, channels first, channels other than 1 or 3)."""
    name = keras_file.path.name
    if len(keras_file.inputs) != 1:
        raise UnsupportedSource(
            f"{name} has {len(keras_file.inputs)} inputs; an image classifier takes one "
            "(height x width x channels pixels)",
            param="file",
        )
    [spec] = keras_file.inputs
    if len(spec.shape) != 3:
        raise UnsupportedSource(
            f"{name} takes inputs of shape {list(spec.shape)}; an image classifier's is "
            "(height, width, channels)",
            param="file",
        )
    first = [
        layer.get("name") or (layer.get("config") or {}).get("name")
        for layer in keras_file.layers
        if (layer.get("config") or {}).get("data_format") == "channels_first"
    ]
    if first:
        raise UnsupportedSource(
            f"{name}: layer {first[0]!r} takes channels first; images are served to models "
            "that take them last (height, width, channels: Keras's default), so build the "
            "model with data_format='channels_last'",
            param="file",
        )
    height, width, channels = spec.shape
    if channels not in IMAGE_CHANNELS:
        raise UnsupportedSource(
            f"{name} takes {channels} channels per pixel; images are served to models of 1 "
            "(grey) or 3 (RGB) channels",
            param="file",
        )
    assert isinstance(channels, int)
    return ImageInputSpec(height, width, channels, spec.dtype, _pixel_max(keras_file, params))


def _pixel_max(keras_file: KerasFile, params: Mapping[str, Any]) -> float:
    given = params.get(PIXEL_MAX_PARAM)
    if given is not None:
        if isinstance(given, bool) or not isinstance(given, int | float) or not given > 0:
            raise UnsupportedSource(
                f"{PIXEL_MAX_PARAM}={given!r}: give the value of a white pixel in the model's "
                "input, a number above 0 (1 for pixels scaled to [0, 1], 255 for raw ones)",
                param=PIXEL_MAX_PARAM,
            )
        return float(given)
    # A Rescaling layer before the network proper (after augmentation or Resizing layers, as
    # Keras's image classification tutorial writes it) means the model takes raw pixels.
    for class_name in keras_file.layer_classes:
        if class_name == "Rescaling":
            return RAW_PIXEL_MAX
        if class_name in IMAGE_LAYERS or class_name in ("Dense", "Flatten"):
            break
    return 1.0


def labels(files: Mapping[str, Path], params: Mapping[str, Any], units: int) -> tuple[str, ...]:
    """The class names in output order; a one-unit sigmoid output has two (0 and 1)."""
    width = 2 if units == 1 else units
    given: list[str] | None = None
    if "labels.txt" in files:
        given = [line.strip() for line in vocabulary_lines(_read_text(files["labels.txt"]))]
    elif "labels.json" in files:
        try:
            data = json.loads(_read_text(files["labels.json"]))
        except json.JSONDecodeError as exc:
            raise UnsupportedSource(f"labels.json is not JSON: {exc}", param="file") from exc
        data = data.get("labels") if isinstance(data, dict) else data
        if not isinstance(data, list):
            raise UnsupportedSource('labels.json: give a list, or {"labels": [...]}', param="file")
        given = [str(label) for label in data]
    elif isinstance(params.get("labels"), list):
        given = [str(label) for label in params["labels"]]
    if given is None:
        return tuple(f"LABEL_{i}" for i in range(width))
    if len(given) != width:
        raise UnsupportedSource(
            f"the model has {width} classes (its output layer has {units} unit"
            f"{'s' if units != 1 else ''}), but {len(given)} labels are given",
            param="labels",
        )
    return tuple(given)


def _layer_vocabulary(keras_file: KerasFile) -> list[str]:
    """The lines of the TextVectorization layer's saved vocabulary.txt (its assets)."""
    candidates = sorted(
        (name for name in keras_file.assets if PurePosixPath(name).name == VOCABULARY_FILE),
        key=len,
    )
    if not candidates:
        return []
    with zipfile.ZipFile(keras_file.path) as archive:
        info = archive.getinfo(candidates[0])
        if info.file_size > MAX_SIDE_FILE_BYTES:
            raise UnsupportedSource(f"the vocabulary {candidates[0]} is too large", param="file")
        return vocabulary_lines(archive.read(info).decode("utf-8"))


def _sequence_length(keras_file: KerasFile) -> int | None:
    """The fixed token count of the model's input, if its shape fixes one."""
    if len(keras_file.inputs) != 1:
        raise UnsupportedSource(
            f"{keras_file.path.name} has {len(keras_file.inputs)} inputs; a text classifier "
            "takes one (its token ids)",
            param="file",
        )
    shape = keras_file.inputs[0].shape
    return shape[0] if len(shape) == 1 and isinstance(shape[0], int) else None


def _read_text(path: Path) -> str:
    if path.stat().st_size > MAX_SIDE_FILE_BYTES:
        raise UnsupportedSource(
            f"{path.name} is larger than {MAX_SIDE_FILE_BYTES >> 20} MiB", param="file"
        )
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UnsupportedSource(f"{path.name} is not UTF-8 text", param="file") from exc
