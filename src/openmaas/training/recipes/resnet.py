"""`resnet`: ResNet-18 (torchvision's architecture, `openmaas.nn.vision.ResNet18`) trained from
scratch, or fine-tuned from a registered ResNet-18 image model trained here (the job's
`base_model`: its weights, input size, channels and normalization; a new output layer when
the classes differ). Flips and crops augment the training images; SGD with momentum and a
cosine schedule, as ResNets are usually trained. Served by the `openmaas-vision` runtime.

Small images (`stem="small"`, the default below 64 pixels a side): a 3x3 stride-1 first
convolution instead of the 7x7 stride-2 one, so 28 x 28 inputs keep a 2 x 2 map at the
last stage. It costs about 40x the `cnn` recipe per image (see docs/benchmarks.md).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from openmaas.training.hyperparameters import choice
from openmaas.training.recipe import TrainingContext, TrainingResult
from openmaas.training.recipes.images import IMAGE_DEFAULTS, ImageRecipe

DEFAULTS: dict[str, Any] = {
    **IMAGE_DEFAULTS,
    "n_epochs": 10,
    "batch_size": 128,
    "optimizer": "sgd",
    "learning_rate": 0.05,
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "schedule": "cosine",
    "warmup_ratio": 0.02,
    "stem": "auto",  # "small" (3x3, stride 1) below 64 pixels a side, else "imagenet"
}
SMALL_IMAGE_SIDE = 64


class ResNetRecipe(ImageRecipe):
    name = "resnet"
    accepts_base_model = True
    description = "ResNet-18 from scratch, or fine-tuned from a registered ResNet-18"

    def defaults(self) -> dict[str, Any]:
        return dict(DEFAULTS)

    def check(self, hp: Mapping[str, Any]) -> None:
        choice(hp, "stem", ("auto", "small", "imagenet"))

    def train(self, ctx: TrainingContext) -> TrainingResult:
        from openmaas.nn.vision import (
            ResNet18,
            ResNetConfig,
            load_image_classifier,
            network_config,
            replace_head,
        )
        from openmaas.training.recipes.images import ImageRun, image_size

        hp = self.resolve(ctx.hyperparameters, len(ctx.train))
        if ctx.base_model is None:
            run = ImageRun.prepare(ctx, hp, channels=None, size=image_size(hp))
            stem = hp["stem"]
            if stem == "auto":
                small = min(run.height, run.width) < SMALL_IMAGE_SIDE
                stem = "small" if small else "imagenet"
            config = ResNetConfig(channels=run.channels, n_labels=len(run.labels), stem=stem)
            network = ResNet18(config)
            return run.train_and_save(
                self.name, "resnet18", network, network_config(network, config)
            )
        base = load_image_classifier(ctx.base_model)
        if base.architecture != "resnet18":
            raise ValueError(
                f"base model {ctx.base_model_reference} is a {base.architecture!r} network; the "
                "resnet recipe fine-tunes a ResNet-18 trained here (recipe resnet)"
            )
        run = ImageRun.prepare(
            ctx,
            hp,
            channels=base.channels,
            size=(base.height, base.width),
            normalization=(base.mean, base.std),
        )
        tuned = base.network
        tuned_config = dict(base.config)
        if tuple(run.labels) != base.labels:
            replace_head(tuned, len(run.labels))
            tuned_config["n_labels"] = len(run.labels)
        ctx.message(f"fine-tuning {ctx.base_model_reference}: {json.dumps(tuned_config)}")
        return run.train_and_save(self.name, "resnet18", tuned, tuned_config)
