"""The `keras` runtime: Keras 3 `.keras` models on Keras's PyTorch backend (no TensorFlow).

`KerasNetwork` loads the file (safe mode: no code from the file runs; `keras_files` has
refused Lambda layers and custom objects already) and runs arrays through it; a task's model
wraps it with that task's input and output. Text classifiers (`Embedding` + `LSTM`/`GRU`/
`Conv1D` + `Dense`) are `KerasTextClassifier`: texts become token ids in Python
(`keras_text`), then the network. Image classifiers (`Conv2D` + pooling + `Dense`) are
`keras_images.KerasImageClassifier`: decoded images resized to the input's shape, then the
same network and the same `class_scores`.

Keras picks its backend once, when it is first imported; `import_keras` is the only place
that imports it, and it sets `KERAS_BACKEND=torch` for the process just before.

Example::

    source = ModelSource.for_directory(path, task="text-classification", runtime="keras")
    model = KerasRuntime().load(source, LoadOptions())
    model.classify(["a gripping, beautifully shot film"])[0][0]  # LabelScore('positive', 0.91)
"""

from __future__ import annotations

import copy
import json
import os
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from openmaas.errors import ModelLoadFailed, OpenMaaSError
from openmaas.runtimes.base import LoadedModel, LoadOptions, ModelSource, Runtime, softmax
from openmaas.runtimes.keras_files import CONFIG_MEMBER, KerasFile
from openmaas.runtimes.keras_intake import inspect_keras_model, labels, text_encoder
from openmaas.runtimes.keras_text import TextEncoder, Vectorizer
from openmaas.tasks.names import Task
from openmaas.tasks.text_classification import LabelScore, ranked

BACKEND = "torch"
# Rows per forward pass; texts are taken in length order so that each pass pads little.
ROWS_PER_PASS = 64
# Resident memory over the unpacked file: the weights once, plus one pass's activations.
WEIGHTS_OVERHEAD_FACTOR = 1.5
FloatArray = npt.NDArray[np.float32]


def import_keras() -> ModuleType:
    """Keras, on its PyTorch backend: the one place that imports it."""
    if "keras" not in sys.modules:
        os.environ["KERAS_BACKEND"] = BACKEND
    import keras

    module: ModuleType = keras
    if keras.backend.backend() != BACKEND:
        raise ModelLoadFailed(
            f"Keras was imported in this process with the {keras.backend.backend()!r} backend "
            f"before the keras runtime set {BACKEND!r}; unset KERAS_BACKEND",
            param="model",
        )
    return module


class KerasRuntime(Runtime):
    """Keras 3 `.keras` files: text and image classifiers."""

    name = "keras"
    tasks = frozenset({Task.TEXT_CLASSIFICATION, Task.IMAGE_CLASSIFICATION})

    def estimate_memory_bytes(self, source: ModelSource) -> int:
        keras_file = inspect_keras_model(model_files(source), source.params)
        return int(keras_file.unpacked_bytes * WEIGHTS_OVERHEAD_FACTOR)

    def load(self, source: ModelSource, options: LoadOptions) -> LoadedModel:
        task = Task(source.task)
        if task is Task.IMAGE_CLASSIFICATION:
            # Imported here: keras_images builds on this module's network and scores.
            from openmaas.runtimes.keras_images import KerasImageClassifier

            return KerasImageClassifier(source, options)
        if task is not Task.TEXT_CLASSIFICATION:
            raise ModelLoadFailed(
                f"{source.label}: the keras runtime serves text-classification and "
                f"image-classification, not {source.task}",
                param="model",
            )
        return KerasTextClassifier(source, options)


class KerasNetwork:
    """A `.keras` file loaded for inference: arrays in, the output array out.

    Example::

        network = KerasNetwork(read_keras_file(path), device="cpu")
        network.predict(np.array([[4, 9, 2, 0]]))  # -> float32 (1, classes)
    """

    def __init__(
        self, keras_file: KerasFile, *, device: str, drop_vectorizer: bool = False
    ) -> None:
        self.keras = import_keras()
        self.device = device
        try:
            with (
                self.keras.device(device),
                tempfile.TemporaryDirectory(prefix="openmaas-keras-") as tmp,
            ):
                path = keras_file.path
                if drop_vectorizer:
                    path = _without_vectorizer(keras_file, Path(tmp) / "model.keras")
                self.model = self.keras.saving.load_model(path, compile=False, safe_mode=True)
        except OpenMaaSError:
            raise
        except Exception as exc:  # Keras raises ValueError, TypeError, OSError, h5py errors
            raise ModelLoadFailed(
                f"{keras_file.path.name}: Keras could not load the model: "
                f"{type(exc).__name__}: {str(exc)[:400]}",
                param="model",
            ) from exc
        self.memory_bytes = sum(
            int(np.prod(w.shape)) * np.dtype(w.dtype).itemsize for w in self.model.weights
        )

    def predict(self, batch: npt.NDArray[Any]) -> FloatArray:
        with torch.inference_mode(), self.keras.device(self.device):
            output = self.model(self.keras.ops.convert_to_tensor(batch), training=False)
        result: FloatArray = np.asarray(self.keras.ops.convert_to_numpy(output), dtype=np.float32)
        return result

    def unload(self) -> None:
        del self.model
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()


class KerasTextClassifier(LoadedModel):
    """A Keras text classifier: its preprocessing in Python, its network on torch."""

    def __init__(self, source: ModelSource, options: LoadOptions) -> None:
        self.source = source
        self.tasks = frozenset({Task.TEXT_CLASSIFICATION.value})
        files, keras_file, units, activation = open_classifier(source, options)
        self.encoder: TextEncoder = text_encoder(keras_file, files, source.params)
        self.labels = labels(files, source.params, units)
        self.activation = activation
        self.network = KerasNetwork(
            keras_file, device=options.device, drop_vectorizer=keras_file.vectorizer is not None
        )
        self.memory_bytes = self.network.memory_bytes
        self._pads = isinstance(self.encoder, Vectorizer) and self.encoder.output_mode == "int"

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return self.encoder.count_tokens(texts)

    def classify(self, texts: Sequence[str]) -> list[list[LabelScore]]:
        if not texts:
            return []
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        scores = np.zeros((len(texts), len(self.labels)), dtype=np.float64)
        for start in range(0, len(order), ROWS_PER_PASS):
            indices = order[start : start + ROWS_PER_PASS]
            batch = self.encoder.encode([texts[i] for i in indices])
            scores[indices] = class_scores(self.network.predict(batch), self.activation)
        return [ranked(self.labels, row.tolist()) for row in scores]

    def unload(self) -> None:
        self.network.unload()


def class_scores(output: FloatArray, activation: str) -> npt.NDArray[np.float64]:
    """Per-class scores from a classifier's last layer: probabilities as the model computed
    them (softmax; sigmoid: one unit is the second of two classes, several are independent
    labels), else a softmax of the logits."""
    if output.ndim != 2:
        raise ModelLoadFailed(
            f"the model's output has shape {output.shape}; a classifier's is (batch, classes)",
            param="model",
        )
    values = output.astype(np.float64)
    if output.shape[1] == 1:
        positive = values[:, 0] if activation == "sigmoid" else 1.0 / (1.0 + np.exp(-values[:, 0]))
        return np.stack([1.0 - positive, positive], axis=1)
    if activation in ("softmax", "sigmoid"):
        return values
    return softmax(values)


def open_classifier(
    source: ModelSource, options: LoadOptions
) -> tuple[dict[str, Path], KerasFile, int, str]:
    """The version's files, its `.keras` file (read, not loaded), and its output Dense
    layer's units and activation (refused when it has none); torch's threads set as the
    options ask."""
    if options.threads:
        torch.set_num_threads(options.threads)
    files = model_files(source)
    keras_file = inspect_keras_model(files, source.params)
    if keras_file.output_units is None or keras_file.output_activation is None:
        raise ModelLoadFailed(
            f"{source.label}: the model's output is not a Dense layer, so it is no "
            "classifier this runtime can serve",
            param="model",
        )
    return files, keras_file, keras_file.output_units, keras_file.output_activation


def model_files(source: ModelSource) -> dict[str, Path]:
    return {
        path.relative_to(source.directory).as_posix(): path
        for path in sorted(source.directory.rglob("*"))
        if path.is_file()
    }


def _without_vectorizer(keras_file: KerasFile, target: Path) -> Path:
    """A copy of the file whose model begins after its TextVectorization layer (which needs
    TensorFlow): the input becomes the layer's output, token ids or a bag-of-words vector."""
    vectorizer = keras_file.vectorizer or {}
    if not keras_file.sequential:
        raise ModelLoadFailed(
            f"{keras_file.path.name}: a TextVectorization layer is reproduced only at the start "
            "of a Sequential model; save the model without it and register its vocabulary "
            "(vocabulary.txt) beside it",
            param="model",
        )
    if vectorizer.get("output_mode", "int") == "int":
        length = vectorizer.get("output_sequence_length")
        shape: list[int | None] = [None, length if isinstance(length, int) else None]
        dtype = "int64"
    else:
        width = vectorizer.get("max_tokens") if vectorizer.get("pad_to_max_tokens") else None
        shape = [None, width or vectorizer.get("vocabulary_size")]
        dtype = "float32"
    config = copy.deepcopy(keras_file.config)
    layers = [
        layer
        for layer in config["config"]["layers"]
        if layer.get("class_name") != "TextVectorization"
    ]
    head = layers[0] if layers and layers[0].get("class_name") == "InputLayer" else None
    if head is not None:
        head["config"].pop("batch_input_shape", None)
        head["config"].update({"batch_shape": shape, "dtype": dtype})
    else:
        layers.insert(
            0,
            {
                "module": "keras.layers",
                "class_name": "InputLayer",
                "config": {"batch_shape": shape, "dtype": dtype, "name": "tokens"},
                "registered_name": None,
            },
        )
    config["config"]["layers"] = layers
    config["config"]["build_input_shape"] = shape
    config["build_config"] = {"input_shape": shape}
    with zipfile.ZipFile(keras_file.path) as source, zipfile.ZipFile(target, "w") as out:
        for info in source.infolist():
            if info.filename == CONFIG_MEMBER:
                out.writestr(CONFIG_MEMBER, json.dumps(config))
            elif not info.filename.startswith("assets/"):
                with source.open(info) as member, out.open(info.filename, "w") as copy_to:
                    while chunk := member.read(1 << 20):
                        copy_to.write(chunk)
    return target
