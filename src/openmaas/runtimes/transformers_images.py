"""Hugging Face image classifiers: a directory with `config.json` (an architecture ending in
`ForImageClassification`), weights and the image processor's `preprocessor_config.json`,
loaded with `AutoModelForImageClassification` and `AutoImageProcessor`. Images arrive decoded
(H x W x C float32 in [0, 1], in the model's `num_channels`); the processor resizes and
normalizes them as the model was trained (already scaled, so its rescaling is off).

Example::

    source = ModelSource.for_directory(path, task="image-classification",
                                       runtime="transformers")
    model = load_image_classifier(source, LoadOptions())
    model.classify_images([pixels])[0][0]  # LabelScore('tabby cat', 0.81)
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
from transformers import AutoImageProcessor, AutoModelForImageClassification

from openmaas.errors import ModelLoadFailed
from openmaas.runtimes.base import LoadedModel, LoadOptions, ModelSource
from openmaas.runtimes.vision import ImageClassifierModel
from openmaas.tasks.names import Task


def load_image_classifier(source: ModelSource, options: LoadOptions) -> LoadedModel:
    return TransformersImageClassifier(source, options)


class TransformersImageClassifier(ImageClassifierModel):
    def __init__(self, source: ModelSource, options: LoadOptions) -> None:
        self.source = source
        self.tasks = frozenset({Task.IMAGE_CLASSIFICATION.value})
        if options.threads:
            torch.set_num_threads(options.threads)
        if not (source.directory / "preprocessor_config.json").is_file():
            raise ModelLoadFailed(
                f"model '{source.label}' has no preprocessor_config.json: an image classifier "
                "directory needs its image processor (save it with "
                "image_processor.save_pretrained(directory))"
            )
        self.device = torch.device(options.device)
        network: Any = AutoModelForImageClassification.from_pretrained(
            source.directory, local_files_only=True, dtype=torch.float32
        )
        module: torch.nn.Module = network
        module.eval()
        module.to(self.device)
        self.network = network
        self.processor: Any = AutoImageProcessor.from_pretrained(
            source.directory, local_files_only=True
        )
        config = network.config
        names: dict[Any, str] = dict(config.id2label or {})
        self.labels = tuple(
            str(names.get(i, names.get(str(i), f"LABEL_{i}"))) for i in range(config.num_labels)
        )
        self.image_channels = int(getattr(config, "num_channels", 3) or 3)
        self.image_limits = options.image_limits
        tensors = itertools.chain(module.parameters(), module.buffers())
        self.memory_bytes = sum(t.numel() * t.element_size() for t in tensors)

    def network_inputs(self, images: list[torch.Tensor]) -> torch.Tensor:
        arrays = [image.permute(1, 2, 0).numpy() for image in images]
        inputs = self.processor(
            images=arrays,
            return_tensors="pt",
            do_rescale=False,  # already in [0, 1]
            input_data_format="channels_last",
        )
        pixel_values: torch.Tensor = inputs["pixel_values"].to(self.device)
        return pixel_values

    def network_logits(self, inputs: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.network(pixel_values=inputs).logits
        return logits
