"""A linear classification head over a frozen registered transformer encoder (e.g. the
packaged MiniLM): the encoder runs once over every text, and only the head trains, on those
features, so epochs take milliseconds. The head is then put into the base model's
sequence-classification network, saved as a full Hugging Face
`AutoModelForSequenceClassification` directory served by the `transformers` runtime.

The features are what the architecture feeds its final classification layer (BERT: the
pooler's output), so the served model computes exactly what the head was trained on. They are
cached in the job's work directory, so a resumed job does not run the encoder again. Text
augmentation does not apply (the features are fixed), so this recipe has no `augment`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from openmaas.training.hyperparameters import COMMON_DEFAULTS, LoopSettings
from openmaas.training.recipe import TrainingContext, TrainingResult, TrainingStopped
from openmaas.training.recipes.classification import ClassificationRecipe

if TYPE_CHECKING:
    import torch
    from torch import nn
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

DEFAULTS: dict[str, Any] = {
    **{name: value for name, value in COMMON_DEFAULTS.items() if name != "augment"},
    "n_epochs": 30,  # an epoch over cached features is cheap; early stopping ends it sooner
    "batch_size": 32,
    "learning_rate": 1e-3,
    "dropout": 0.1,  # on the features, in front of the head
    "max_length": 128,  # tokens the encoder reads per text
    "patience": 3,
}
FEATURE_BATCH_SIZE = 32  # texts per encoder pass, taken in length order
FEATURE_CACHE = "features"  # under ctx.work_dir


class FrozenEncoderRecipe(ClassificationRecipe):
    name = "frozen_encoder"
    needs_base_model = True
    description = "a linear head over a frozen registered encoder: fast, no encoder training"

    def defaults(self) -> dict[str, Any]:
        return dict(DEFAULTS)

    def loop_settings(self, hp: Mapping[str, Any]) -> LoopSettings:
        return LoopSettings.from_hyperparameters({**hp, "augment": False})

    def train(self, ctx: TrainingContext) -> TrainingResult:
        import torch
        from torch import nn

        from openmaas.training.loop import LabeledItems, evaluate, train_classifier
        from openmaas.training.recipes.classification import (
            LabeledSplits,
            classification_result,
        )
        from openmaas.training.recipes.sequence_classification import (
            RUNTIME,
            classification_layer,
            load_sequence_classifier,
            require_base_model,
            save_sequence_classifier,
            served_max_length,
            token_counts,
        )

        hp = self.resolve(ctx.hyperparameters, len(ctx.train))
        settings = self.loop_settings(hp)
        base = require_base_model(ctx)
        data = LabeledSplits.from_context(ctx)
        max_length = int(hp["max_length"])
        device = torch.device(ctx.device)

        torch.manual_seed(ctx.seed)
        network, tokenizer = load_sequence_classifier(base, data.labels, dropout=hp["dropout"])
        module: nn.Module = network  # through nn.Module: transformers annotates `to` oddly
        module.to(device)
        layer = classification_layer(network, len(data.labels))

        def features(split: str, texts: Sequence[str], limit: int) -> list[torch.Tensor]:
            cache = feature_cache(ctx, base, split, texts, limit)
            rows = encoder_features(
                ctx, network, tokenizer, layer, texts, max_length=limit, cache=cache
            )
            return list(rows)

        train = LabeledItems(features("train", data.train.texts, max_length), data.train.labels)
        validation = LabeledItems(
            features("validation", data.validation.texts, max_length), data.validation.labels
        )
        ctx.message(f"encoded {len(train) + len(validation)} texts; training the head")

        linear = nn.Linear(layer.in_features, layer.out_features)
        head = nn.Sequential(nn.Dropout(hp["dropout"]), linear)
        head.to(device)

        def forward(rows: Sequence[torch.Tensor]) -> torch.Tensor:
            logits: torch.Tensor = head(torch.stack(list(rows)).to(device))
            return logits

        outcome = train_classifier(
            ctx,
            network=head,
            forward=forward,
            train=train,
            validation=validation,
            labels=data.labels,
            settings=settings,
            item_tokens=token_counts(tokenizer, data.train.texts, max_length=max_length),
        )

        # The registered metrics describe the model as served: texts cut where the
        # transformers runtime cuts them, not at the training length.
        evaluated = data.evaluation_split()
        evaluation = None
        if evaluated is not None:
            name, split = evaluated
            rows = features(name, split.texts, served_max_length(network, tokenizer))
            evaluation = evaluate(
                head,
                forward,
                LabeledItems(rows, split.labels),
                data.labels,
                should_stop=ctx.should_stop,
            )
        with torch.no_grad():
            layer.weight.copy_(linear.weight)
            layer.bias.copy_(linear.bias)
        save_sequence_classifier(ctx.output_dir, network, tokenizer)
        return classification_result(
            ctx,
            recipe=self.name,
            runtime=RUNTIME,
            hyperparameters=hp,
            labels=data.labels,
            outcome=outcome,
            evaluation=evaluation,
            evaluated_on=evaluated[0] if evaluated is not None else None,
        )


def feature_cache(
    ctx: TrainingContext, base: Path, split: str, texts: Sequence[str], max_length: int
) -> Path:
    """Where one split's features are kept: named by what they depend on."""
    digest = hashlib.sha256(f"{base.resolve()}\0{max_length}\0".encode())
    for text in texts:
        digest.update(text.encode("utf-8") + b"\0")
    return ctx.work_dir / FEATURE_CACHE / f"{split}-{digest.hexdigest()[:16]}.safetensors"


def encoder_features(
    ctx: TrainingContext,
    network: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    layer: nn.Linear,
    texts: Sequence[str],
    *,
    max_length: int,
    cache: Path,
) -> torch.Tensor:
    """(texts, features): the input of `layer` for each text, with the network in eval mode.
    Polls `ctx.should_stop()` between passes."""
    import torch
    from safetensors.torch import load_file, save_file

    from openmaas.training.recipes.sequence_classification import token_counts, tokenize

    if cache.is_file():
        return load_file(str(cache))["features"]
    rows = torch.zeros((len(texts), layer.in_features), dtype=torch.float32)
    captured: list[torch.Tensor] = []

    def capture(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        captured.append(inputs[0].detach())

    handle = layer.register_forward_pre_hook(capture)
    lengths = token_counts(tokenizer, texts, max_length=max_length)
    order = sorted(range(len(texts)), key=lambda i: -lengths[i])
    module: nn.Module = network  # through nn.Module: transformers leaves eval() unannotated
    module.eval()
    try:
        for start in range(0, len(order), FEATURE_BATCH_SIZE):
            if ctx.should_stop():
                raise TrainingStopped("stopped while encoding the texts")
            indices = order[start : start + FEATURE_BATCH_SIZE]
            inputs = tokenize(
                tokenizer, [texts[i] for i in indices], max_length=max_length, device=network.device
            )
            captured.clear()
            with torch.no_grad():
                network(**inputs)
            rows[indices] = captured[-1].float().cpu()
    finally:
        handle.remove()
    cache.parent.mkdir(parents=True, exist_ok=True)
    partial = cache.with_suffix(".partial")
    save_file({"features": rows}, str(partial))
    os.replace(partial, cache)
    return rows
