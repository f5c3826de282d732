"""The `openmaas-vision` runtime: image classifiers trained here by the `cnn` and `resnet`
recipes (`openmaas.nn.vision`'s directory: `openmaas.json` + `model.safetensors`). Images
arrive decoded (H x W x C float32 in [0, 1], in the model's channels, any size); each is
resized to the trained size and normalized with the training set's mean and std.

Example::

    source = ModelSource.for_directory(path, task="image-classification",
                                       runtime="openmaas-vision")
    model = VisionRuntime().load(source, LoadOptions())
    model.classify_images([pixels])[0][0]  # LabelScore('Sneaker', 0.97)
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import torch
from safetensors import SafetensorError

from openmaas.errors import ModelLoadFailed
from openmaas.images import FloatImage, ImageLimits, decode_inputs
from openmaas.nn.vision import load_image_classifier, to_batch
from openmaas.runtimes.base import LoadedModel, LoadOptions, ModelSource, Runtime, softmax
from openmaas.tasks.image_classification import ImageInput
from openmaas.tasks.names import Task
from openmaas.tasks.text_classification import LabelScore, ranked

# Images per forward pass: a ResNet-18 pass over 64 small images holds ~100 MB of activations.
IMAGES_PER_PASS = 64


class ImageClassifierModel(LoadedModel):
    """What every image classifier shares: decoding under the server's limits into the
    model's channels, and ranked labels computed a few images at a time. Subclasses set
    `labels`, `image_channels` and `image_limits` and implement `logits`."""

    labels: tuple[str, ...]
    image_channels: int  # 1 (grey) or 3 (RGB)
    image_limits: ImageLimits

    def decode_images(self, inputs: Sequence[ImageInput]) -> list[FloatImage]:
        return decode_inputs(inputs, self.image_limits, self.image_channels)

    def logits(self, images: list[torch.Tensor]) -> torch.Tensor:
        """Logits for C x H x W float tensors in [0, 1], one row per image."""
        raise NotImplementedError

    def classify_images(self, images: Sequence[FloatImage]) -> list[list[LabelScore]]:
        results: list[list[LabelScore]] = []
        tensors = [torch.from_numpy(np.ascontiguousarray(i.transpose(2, 0, 1))) for i in images]
        for start in range(0, len(tensors), IMAGES_PER_PASS):
            with torch.inference_mode():
                logits = self.logits(tensors[start : start + IMAGES_PER_PASS])
            for row in softmax(logits.float().cpu().numpy()):
                results.append(ranked(self.labels, row.tolist()))
        return results


class VisionRuntime(Runtime):
    """Networks trained by the cnn and resnet recipes."""

    name = "openmaas-vision"
    tasks = frozenset({Task.IMAGE_CLASSIFICATION})

    def load(self, source: ModelSource, options: LoadOptions) -> LoadedModel:
        return VisionModel(source, options)


class VisionModel(ImageClassifierModel):
    def __init__(self, source: ModelSource, options: LoadOptions) -> None:
        self.source = source
        self.tasks = frozenset({Task.IMAGE_CLASSIFICATION.value})
        if options.threads:
            torch.set_num_threads(options.threads)
        try:
            saved = load_image_classifier(source.directory)
        except (OSError, KeyError, ValueError, SafetensorError) as exc:
            raise ModelLoadFailed(f"model '{source.label}' could not be loaded: {exc}") from None
        self.device = torch.device(options.device)
        self.network = saved.network.to(self.device)
        self.saved = saved
        self.labels = saved.labels
        self.image_channels = saved.channels
        self.image_limits: ImageLimits = options.image_limits
        tensors = itertools.chain(self.network.parameters(), self.network.buffers())
        self.memory_bytes = sum(t.numel() * t.element_size() for t in tensors)

    def logits(self, images: list[torch.Tensor]) -> torch.Tensor:
        saved = self.saved
        inputs = to_batch(images, saved.height, saved.width, saved.mean, saved.std)
        logits: torch.Tensor = self.network(inputs.to(self.device))
        return logits
