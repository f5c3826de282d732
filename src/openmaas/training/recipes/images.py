"""What the image recipes (`cnn`, `resnet`) share: hyperparameters, the images decoded once
into one uint8 array at the training size, augmentation (random horizontal flips and crops
of a zero-padded image), the shared classification loop (class weighting, early stopping,
checkpoints: `training.loop`), the test metrics and the servable `openmaas-vision`
directory.

Examples are `{"image": <base64 of an image file>, "label": ...}` (datasets of images,
`datasets.images`). Images are decoded as serving decodes them (`openmaas.images`), grey when
every training image is grey, and resized (bilinear, antialiased: `nn.vision.to_batch`, the
function serving uses) to the most common training size unless `image_size` names one.

Example::

    run = ImageRun.prepare(ctx, hp, channels=None, size=None)
    network = SmallCNN(CNNConfig(channels=run.channels, height=run.height, width=run.width,
                                 n_labels=len(run.labels)))
    return run.train_and_save("cnn", "cnn", network, config)
"""

from __future__ import annotations

import base64
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from openmaas.training.hyperparameters import COMMON_DEFAULTS, LoopSettings, fraction
from openmaas.training.recipe import Example, Recipe, TrainingContext, TrainingResult

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    from torch import nn

TASK = "image-classification"

IMAGE_DEFAULTS: dict[str, Any] = {
    **{k: v for k, v in COMMON_DEFAULTS.items() if k != "max_length"},
    "batch_size": 64,
    "early_stopping_metric": "accuracy",
    "patience": 3,
    "augment": True,  # random horizontal flips and crops (see `crop_padding`)
    "flip": True,  # horizontal flips (off for digits, text, anything with a handedness)
    "crop_padding": 0.1,  # crops of the image zero-padded by this share of its side
    "image_size": "auto",  # [height, width]; auto: the most common training size
}


class ImageRecipe(Recipe):
    """An image-classification recipe; hyperparameters checked at `resolve`."""

    tasks = (TASK,)

    def resolve(self, given: Mapping[str, Any], n_examples: int) -> dict[str, Any]:
        hp = super().resolve(given, n_examples)
        LoopSettings.from_hyperparameters(hp)
        fraction(hp, "crop_padding")
        image_size(hp)
        if not isinstance(hp["flip"], bool):
            raise ValueError(f"hyperparameter 'flip' must be true or false, got {hp['flip']!r}")
        self.check(hp)
        return hp

    def check(self, hp: Mapping[str, Any]) -> None:
        """Raise ValueError for a bad recipe-specific value."""


def image_size(hp: Mapping[str, Any]) -> tuple[int, int] | None:
    value = hp.get("image_size", "auto")
    if value == "auto" or value is None:
        return None
    if (
        isinstance(value, list | tuple)
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and 8 <= v <= 1024 for v in value)
    ):
        return int(value[0]), int(value[1])
    raise ValueError(
        f"hyperparameter 'image_size' must be \"auto\" or [height, width] (8 to 1024), "
        f"got {value!r}"
    )


def _labels(ctx: TrainingContext) -> tuple[str, ...]:
    splits = {"train": ctx.train, "validation": ctx.validation, "test": ctx.test}
    for name, examples in splits.items():
        for i, example in enumerate(examples):
            if not isinstance(example.get("image"), str) or example.get("label") is None:
                raise ValueError(
                    f"{name} example {i} needs an 'image' (base64) and a 'label' "
                    "(image-classification examples are {'image': ..., 'label': ...})"
                )
    if not ctx.train:
        raise ValueError("the training split is empty")
    labels = tuple(sorted({str(e["label"]) for examples in splits.values() for e in examples}))
    if len(labels) < 2:
        raise ValueError(f"classification needs at least 2 labels; the data has {labels}")
    return labels


@dataclass(frozen=True, slots=True)
class ImageSplit:
    images: npt.NDArray[np.uint8]  # N x H x W x C
    labels: list[int]


@dataclass(frozen=True, slots=True)
class ImageRun:
    ctx: TrainingContext
    hp: Mapping[str, Any]
    settings: LoopSettings
    labels: tuple[str, ...]
    channels: int
    height: int
    width: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    train: ImageSplit
    validation: ImageSplit
    test: ImageSplit

    @classmethod
    def prepare(
        cls,
        ctx: TrainingContext,
        hp: Mapping[str, Any],
        *,
        channels: int | None,
        size: tuple[int, int] | None,
        normalization: tuple[Sequence[float], Sequence[float]] | None = None,
    ) -> ImageRun:
        """Seed torch, index the labels and decode every split. `channels`, `size` and
        `normalization` (mean, std) are fixed by a base model; None: from the data."""
        import numpy as np
        import torch

        from openmaas.images import ImageLimits, image_facts

        torch.manual_seed(ctx.seed)
        labels = _labels(ctx)
        limits = ImageLimits(max_bytes=1 << 62, max_pixels=1 << 62)  # checked at upload
        facts = [image_facts(_file(e), limits, what="a training image") for e in ctx.train]
        if channels is None:
            channels = 3 if any(f.channels == 3 for f in facts) else 1
        if size is None:
            size = (
                image_size(hp) or Counter((f.height, f.width) for f in facts).most_common(1)[0][0]
            )
        height, width = size
        index = {label: i for i, label in enumerate(labels)}

        def decoded(examples: Sequence[Example]) -> ImageSplit:
            images = np.zeros((len(examples), height, width, channels), dtype=np.uint8)
            for row, example in enumerate(examples):
                images[row] = _pixels(_file(example), channels, height, width)
            return ImageSplit(images, [index[str(e["label"])] for e in examples])

        train = decoded(ctx.train)
        ctx.message(
            f"{len(ctx.train)} training images at {height} x {width}, "
            f"{'grey' if channels == 1 else 'RGB'}, {len(labels)} classes"
        )
        if normalization is None:
            scaled = train.images.reshape(-1, channels).astype(np.float64) / 255.0
            mean = tuple(float(v) for v in scaled.mean(axis=0))
            std = tuple(max(float(v), 1e-3) for v in scaled.std(axis=0))
        else:
            mean, std = tuple(normalization[0]), tuple(normalization[1])
        return cls(
            ctx=ctx,
            hp=hp,
            settings=LoopSettings.from_hyperparameters(hp),
            labels=labels,
            channels=channels,
            height=height,
            width=width,
            mean=mean,
            std=std,
            train=train,
            validation=decoded(ctx.validation),
            test=decoded(ctx.test),
        )

    def augment(self, image: npt.NDArray[np.uint8], rng: random.Random) -> npt.NDArray[np.uint8]:
        """A random horizontal flip, then a random crop of the zero-padded image."""
        import numpy as np

        if self.hp["flip"] and rng.random() < 0.5:
            image = image[:, ::-1]
        pad = round(float(self.hp["crop_padding"]) * min(self.height, self.width))
        if pad:
            padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)))
            top, left = rng.randint(0, 2 * pad), rng.randint(0, 2 * pad)
            image = padded[top : top + self.height, left : left + self.width]
        return image

    def train_and_save(
        self, recipe: str, architecture: str, network: nn.Module, config: Mapping[str, Any]
    ) -> TrainingResult:
        import numpy as np
        import torch

        from openmaas.nn.vision import SavedImageClassifier, save_image_classifier
        from openmaas.training.loop import LabeledItems, evaluate, train_classifier

        ctx = self.ctx
        device = torch.device(ctx.device)
        network.to(device)
        mean = torch.tensor(self.mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32, device=device).view(1, -1, 1, 1)

        def forward(images: Sequence[npt.NDArray[np.uint8]]) -> torch.Tensor:
            batch = torch.from_numpy(np.ascontiguousarray(np.stack(images))).to(device)
            pixels = batch.permute(0, 3, 1, 2).float().div_(255.0)
            logits: torch.Tensor = network((pixels - mean) / std)
            return logits

        def items(split: ImageSplit) -> LabeledItems[npt.NDArray[np.uint8]]:
            return LabeledItems(list(split.images), split.labels)

        outcome = train_classifier(
            ctx,
            network=network,
            forward=forward,
            train=items(self.train),
            validation=items(self.validation),
            labels=self.labels,
            settings=self.settings,
            augment=self.augment,
        )
        evaluated = (
            ("test", self.test)
            if len(self.test.labels)
            else ("validation", self.validation)
            if len(self.validation.labels)
            else None
        )
        evaluation = None
        if evaluated is not None:
            evaluation = evaluate(
                network, forward, items(evaluated[1]), self.labels, should_stop=ctx.should_stop
            )
        save_image_classifier(
            ctx.output_dir,
            SavedImageClassifier(
                network=network.cpu().eval(),
                architecture=architecture,
                config=config,
                labels=self.labels,
                channels=self.channels,
                height=self.height,
                width=self.width,
                mean=self.mean,
                std=self.std,
                extra={"recipe": recipe},
            ),
        )
        from openmaas.nn.vision import RUNTIME
        from openmaas.training.recipes.classification import evaluated_result

        return evaluated_result(
            ctx,
            task=TASK,
            recipe=recipe,
            runtime=RUNTIME,
            hyperparameters=self.hp,
            labels=self.labels,
            outcome=outcome,
            evaluation=evaluation,
            evaluated_on=evaluated[0] if evaluated is not None else None,
            params={"architecture": architecture},
        )


def _file(example: Example) -> bytes:
    return base64.b64decode(example["image"])


def _pixels(data: bytes, channels: int, height: int, width: int) -> npt.NDArray[np.uint8]:
    """The image as serving sees it: decoded, resized by `to_batch`'s resampling, as uint8."""
    import numpy as np
    import torch

    from openmaas.images import ImageLimits, decode_image

    pixels = decode_image(
        data, ImageLimits(1 << 62, 1 << 62), what="a training image", channels=channels
    )
    if pixels.shape[:2] != (height, width):
        tensor = torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))[None]
        resized = torch.nn.functional.interpolate(
            tensor, size=(height, width), mode="bilinear", antialias=True, align_corners=False
        )[0]
        pixels = resized.permute(1, 2, 0).numpy()
    rounded: npt.NDArray[np.uint8] = np.clip(np.rint(pixels * 255.0), 0, 255).astype(np.uint8)
    return rounded
