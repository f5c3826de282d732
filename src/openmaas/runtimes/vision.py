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
from openmaas.runtimes.image_gradients import integrated_gradients_pixels, sampled_coordinates
from openmaas.tasks.image_classification import ImageInput
from openmaas.tasks.image_explanation import PixelAttributions
from openmaas.tasks.names import Task
from openmaas.tasks.text_classification import LabelScore, ranked

# Images per forward pass: a ResNet-18 pass over 64 small images holds ~100 MB of activations.
IMAGES_PER_PASS = 64


class ImageClassifierModel(LoadedModel):
    """What every image classifier shares: decoding under the server's limits into the
    model's channels, ranked labels computed a few images at a time, and integrated
    gradients at the network's input (`image_gradients`). Subclasses set `labels`,
    `image_channels`, `image_limits` and `device`, and implement `network_inputs` and
    `network_logits`."""

    labels: tuple[str, ...]
    image_channels: int  # 1 (grey) or 3 (RGB)
    image_limits: ImageLimits
    device: torch.device

    @property
    def explains_with_gradients(self) -> bool:
        """Explanations may take the network's gradients (`attribute_pixels`): true of a
        subclass that splits its work into `network_inputs` and `network_logits`, not of
        one that only overrides `logits`."""
        return type(self).network_logits is not ImageClassifierModel.network_logits

    def decode_images(self, inputs: Sequence[ImageInput]) -> list[FloatImage]:
        return decode_inputs(inputs, self.image_limits, self.image_channels)

    def network_inputs(self, images: list[torch.Tensor]) -> torch.Tensor:
        """C x H x W float tensors in [0, 1] as the network reads them (resized and
        normalized): one N x C x h x w batch on the model's device."""
        raise NotImplementedError

    def network_logits(self, inputs: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of `network_inputs`, one row per image."""
        raise NotImplementedError

    def logits(self, images: list[torch.Tensor]) -> torch.Tensor:
        """Logits for C x H x W float tensors in [0, 1], one row per image."""
        return self.network_logits(self.network_inputs(images))

    def attribute_pixels(self, pixels: FloatImage, index: int, steps: int) -> PixelAttributions:
        """Integrated gradients toward output `index`'s probability, from black to the
        image, at the network's input pixels (`tasks.image_explanation`)."""

        def preprocess(image: FloatImage) -> torch.Tensor:
            return self.network_inputs([_tensor(image)])

        inputs = preprocess(pixels)
        baseline = preprocess(np.zeros_like(pixels))
        scores, delta = integrated_gradients_pixels(
            self.network_logits, inputs, baseline, index, steps=steps
        )
        height, width, channels = pixels.shape
        xs, ys = sampled_coordinates(preprocess, height=height, width=width, channels=channels)
        return PixelAttributions(scores, xs, ys, delta)

    def classify_images(self, images: Sequence[FloatImage]) -> list[list[LabelScore]]:
        results: list[list[LabelScore]] = []
        tensors = [_tensor(image) for image in images]
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

    def network_inputs(self, images: list[torch.Tensor]) -> torch.Tensor:
        saved = self.saved
        return to_batch(images, saved.height, saved.width, saved.mean, saved.std).to(self.device)

    def network_logits(self, inputs: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.network(inputs)
        return logits


def _tensor(image: FloatImage) -> torch.Tensor:
    """H x W x C pixels as a C x H x W tensor."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
