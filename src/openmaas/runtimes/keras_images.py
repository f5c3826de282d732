"""Keras 3 image classifiers (`Conv2D` + pooling + `Dense`, grey or RGB) on the keras runtime.

Images arrive decoded by the task (`openmaas.images`: H x W x C float32 in [0, 1], already in
the model's channel count, under the server's limits). Each is resized to the input's
height and width as the other image runtimes resize (bilinear, antialiased when shrinking;
a model whose input leaves them open takes each image at its own size), scaled to the
model's pixel range (`pixel_max`: 255 for a model that begins with a `Rescaling` layer, else
1; see `keras_intake`) and run through the network channels last, as Keras lays images out.

Example::

    source = ModelSource.for_directory(path, task="image-classification", runtime="keras")
    model = KerasRuntime().load(source, LoadOptions())
    model.classify_images([pixels])[0][0]  # LabelScore('Sneaker', 0.93)
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from openmaas.images import FloatImage
from openmaas.nn.vision import to_batch
from openmaas.runtimes.base import LoadOptions, ModelSource
from openmaas.runtimes.keras import KerasNetwork, class_scores, open_classifier
from openmaas.runtimes.keras_intake import image_input, labels
from openmaas.runtimes.vision import IMAGES_PER_PASS, ImageClassifierModel
from openmaas.tasks.names import Task
from openmaas.tasks.text_classification import LabelScore, ranked


class KerasImageClassifier(ImageClassifierModel):
    """A Keras Conv2D classifier: images to the input's size and pixel range, then its network."""

    def __init__(self, source: ModelSource, options: LoadOptions) -> None:
        self.source = source
        self.tasks = frozenset({Task.IMAGE_CLASSIFICATION.value})
        files, keras_file, units, activation = open_classifier(source, options)
        self.input = image_input(keras_file, source.params)
        self.labels = labels(files, source.params, units)
        self.activation = activation
        self.image_channels = self.input.channels
        self.image_limits = options.image_limits
        self.network = KerasNetwork(keras_file, device=options.device)
        self.memory_bytes = self.network.memory_bytes

    def classify_images(self, images: Sequence[FloatImage]) -> list[list[LabelScore]]:
        if not images:
            return []
        scores = np.zeros((len(images), len(self.labels)), dtype=np.float64)
        for size, indices in self._by_size(images).items():
            for start in range(0, len(indices), IMAGES_PER_PASS):
                chunk = indices[start : start + IMAGES_PER_PASS]
                batch = self.model_input([images[i] for i in chunk], *size)
                scores[chunk] = class_scores(self.network.predict(batch), self.activation)
        return [ranked(self.labels, row.tolist()) for row in scores]

    def logits(self, images: list[torch.Tensor]) -> torch.Tensor:
        """Log-scores for C x H x W tensors in [0, 1] (the base class's contract), computed by
        the network on torch so that gradients reach the pixels."""
        height, width = self._size(images[0].shape[1], images[0].shape[2])
        keras = self.network.keras
        batch = to_batch(images, height, width, *_identity(self.input.channels))
        with keras.device(self.network.device):
            output = self.network.model(batch.permute(0, 2, 3, 1) * self.input.pixel_max)
        values: torch.Tensor = output
        if self.activation == "softmax":
            return torch.log(values.clamp_min(1e-12))
        if self.activation == "sigmoid" and values.shape[1] == 1:
            positive = values[:, 0].clamp(1e-12, 1 - 1e-12)
            return torch.stack([torch.log1p(-positive), torch.log(positive)], dim=1)
        return values

    def model_input(self, images: Sequence[FloatImage], height: int, width: int) -> Any:
        """N x H x W x C in the model's pixel range and input dtype."""
        tensors = [torch.from_numpy(np.ascontiguousarray(i.transpose(2, 0, 1))) for i in images]
        resized = to_batch(tensors, height, width, *_identity(self.input.channels))
        pixels = resized.permute(0, 2, 3, 1).numpy() * self.input.pixel_max
        if self.input.dtype.startswith(("int", "uint")):  # a uint8 input before Rescaling
            return np.rint(pixels).astype(self.input.dtype)
        out: npt.NDArray[np.float32] = pixels.astype(np.float32)
        return out

    def _size(self, height: int, width: int) -> tuple[int, int]:
        return self.input.height or height, self.input.width or width

    def _by_size(self, images: Sequence[FloatImage]) -> dict[tuple[int, int], list[int]]:
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        for index, image in enumerate(images):
            groups[self._size(image.shape[0], image.shape[1])].append(index)
        return groups

    def unload(self) -> None:
        self.network.unload()


def _identity(channels: int) -> tuple[list[float], list[float]]:
    """A mean and std that leave pixels as they are (`to_batch` only resizes then)."""
    return [0.0] * channels, [1.0] * channels
