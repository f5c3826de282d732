"""A linear classification head over a frozen registered encoder (e.g. the packaged MiniLM):
the encoder runs once over every text, and only the head trains, on those features, so
epochs take milliseconds. Which features, `features` says:

- `embedding` (what `auto` picks for a base registered as an embedding model): the base
  model's sentence embeddings, exactly as `/v1/embeddings` serves them (its pooling and
  normalization). The result is a `linear-head` version (`weights.safetensors`,
  `labels.json`, `openmaas.json` naming the base by its pinned reference), which the
  `linear-head` runtime serves over the base model it names.
- `classifier` (`auto` for any other base): what the architecture feeds its final
  classification layer (BERT: the pooler's output). The head is put into the base model's
  sequence-classification network, saved as a full Hugging Face
  `AutoModelForSequenceClassification` directory served by the `transformers` runtime.

Either way the served model computes exactly what the head was trained on. The features are
cached in the job's work directory, so a resumed job does not run the encoder again. Text
augmentation does not apply (the features are fixed), so this recipe has no `augment`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from openmaas.runtimes.base import NATIVE_SPEC
from openmaas.training.hyperparameters import COMMON_DEFAULTS, LoopSettings, choice
from openmaas.training.recipe import TrainingContext, TrainingResult, TrainingStopped
from openmaas.training.recipes.classification import ClassificationRecipe

if TYPE_CHECKING:
    import torch
    from torch import nn
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from openmaas.tasks.embedding import Embedder
    from openmaas.training.loop import Evaluation, LabeledItems, LoopOutcome

DEFAULTS: dict[str, Any] = {
    **{name: value for name, value in COMMON_DEFAULTS.items() if name != "augment"},
    "n_epochs": 30,  # an epoch over cached features is cheap; early stopping ends it sooner
    "batch_size": 32,
    "learning_rate": 1e-3,
    "dropout": 0.1,  # on the features, in front of the head
    "max_length": 128,  # tokens the encoder reads per text (classifier features)
    "patience": 3,
    "features": "auto",  # embedding | classifier | auto (see the module docstring)
}
FEATURES = ("auto", "embedding", "classifier")
FEATURE_BATCH_SIZE = 32  # texts per encoder pass, taken in length order
EMBEDDING_BATCH_SIZE = 64  # texts per `embed` call (the runtime sorts and splits them)
LINEAR_HEAD_RUNTIME = "linear-head"
FEATURE_CACHE = "features"  # under ctx.work_dir


class FrozenEncoderRecipe(ClassificationRecipe):
    name = "frozen_encoder"
    needs_base_model = True
    description = "a linear head over a frozen registered encoder: fast, no encoder training"

    def defaults(self) -> dict[str, Any]:
        return dict(DEFAULTS)

    def loop_settings(self, hp: Mapping[str, Any]) -> LoopSettings:
        return LoopSettings.from_hyperparameters({**hp, "augment": False})

    def check(self, hp: Mapping[str, Any]) -> None:
        choice(hp, "features", FEATURES)

    def train(self, ctx: TrainingContext) -> TrainingResult:
        hp = self.resolve(ctx.hyperparameters, len(ctx.train))
        if features_of(ctx, hp["features"]) == "embedding":
            return self.train_on_embeddings(ctx, hp)
        return self.train_on_classifier_features(ctx, hp)

    def train_on_embeddings(self, ctx: TrainingContext, hp: Mapping[str, Any]) -> TrainingResult:

        from openmaas.runtimes.base import LoadOptions, ModelSource, get_runtime
        from openmaas.training.loop import LabeledItems
        from openmaas.training.recipes.classification import (
            LabeledSplits,
            classification_result,
        )

        data = LabeledSplits.from_context(ctx)
        if ctx.base_model is None or not ctx.base_model_reference or not ctx.base_model_runtime:
            raise ValueError("embedding features need a registered base model: give one")
        source = ModelSource.for_directory(
            ctx.base_model,
            task="embedding",
            runtime=ctx.base_model_runtime,
            params=ctx.base_model_params,
        )
        encoder = get_runtime(ctx.base_model_runtime).load(source, LoadOptions(device=ctx.device))
        try:
            embedder = cast("Embedder", encoder)  # an embedding model serves Embedder
            dim = embedder.embedding_dimensions
            if dim is None:
                raise ValueError(f"base model {ctx.base_model_reference} gives no embeddings")

            def features(split: str, texts: Sequence[str]) -> list[torch.Tensor]:
                cache = feature_cache(ctx, ctx.base_model or Path(), split, texts, 0)
                return list(embedding_features(ctx, embedder, texts, dim, cache=cache))

            train = LabeledItems(features("train", data.train.texts), data.train.labels)
            validation = LabeledItems(
                features("validation", data.validation.texts), data.validation.labels
            )
            evaluated = data.evaluation_split()
            held_out = None
            if evaluated is not None:
                name, split = evaluated
                held_out = LabeledItems(features(name, split.texts), split.labels)
            item_tokens = encoder.count_tokens(data.train.texts)
        finally:
            encoder.unload()
        ctx.message(f"embedded {len(train) + len(validation)} texts; training the head")
        linear, outcome, evaluation = fit_head(
            ctx,
            hp,
            self.loop_settings(hp),
            data.labels,
            train,
            validation,
            held_out,
            in_features=dim,
            item_tokens=item_tokens,
        )
        save_linear_head(ctx.output_dir, linear, data.labels, encoder=ctx.base_model_reference)
        return classification_result(
            ctx,
            recipe=self.name,
            runtime=LINEAR_HEAD_RUNTIME,
            hyperparameters=hp,
            labels=data.labels,
            outcome=outcome,
            evaluation=evaluation,
            evaluated_on=evaluated[0] if evaluated is not None else None,
            params={"encoder": ctx.base_model_reference},
        )

    def train_on_classifier_features(
        self, ctx: TrainingContext, hp: Mapping[str, Any]
    ) -> TrainingResult:
        import torch

        from openmaas.training.loop import LabeledItems
        from openmaas.training.recipes.classification import (
            LabeledSplits,
            classification_result,
        )
        from openmaas.training.recipes.sequence_classification import (
            RUNTIME,
            base_with_new_head,
            classification_layer,
            load_sequence_classifier,
            require_base_model,
            save_sequence_classifier,
            served_max_length,
            token_counts,
        )

        data = LabeledSplits.from_context(ctx)
        max_length = int(hp["max_length"])
        network, tokenizer, _ = base_with_new_head(
            ctx, load_sequence_classifier, data.labels, dropout=hp["dropout"]
        )
        base = require_base_model(ctx)
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
        # The registered metrics describe the model as served: texts cut where the
        # transformers runtime cuts them, not at the training length.
        evaluated = data.evaluation_split()
        held_out = None
        if evaluated is not None:
            name, split = evaluated
            rows = features(name, split.texts, served_max_length(network, tokenizer))
            held_out = LabeledItems(rows, split.labels)
        ctx.message(f"encoded {len(train) + len(validation)} texts; training the head")
        linear, outcome, evaluation = fit_head(
            ctx,
            hp,
            self.loop_settings(hp),
            data.labels,
            train,
            validation,
            held_out,
            in_features=layer.in_features,
            item_tokens=token_counts(tokenizer, data.train.texts, max_length=max_length),
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


def fit_head(
    ctx: TrainingContext,
    hp: Mapping[str, Any],
    settings: LoopSettings,
    labels: Sequence[str],
    train: LabeledItems[torch.Tensor],
    validation: LabeledItems[torch.Tensor],
    held_out: LabeledItems[torch.Tensor] | None,
    *,
    in_features: int,
    item_tokens: Sequence[int],
) -> tuple[nn.Linear, LoopOutcome, Evaluation | None]:
    """Train a linear layer (dropout in front) on feature rows; evaluate it on `held_out`."""
    import torch
    from torch import nn

    from openmaas.training.loop import evaluate, train_classifier

    torch.manual_seed(ctx.seed)
    device = torch.device(ctx.device)
    linear = nn.Linear(in_features, len(labels))
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
        labels=labels,
        settings=settings,
        item_tokens=item_tokens,
    )
    evaluation = None
    if held_out is not None:
        evaluation = evaluate(head, forward, held_out, labels, should_stop=ctx.should_stop)
    return linear, outcome, evaluation


def features_of(ctx: TrainingContext, asked: str) -> str:
    """`embedding` or `classifier`: what `asked` (a `features` value) means for this base."""
    if asked != "auto":
        return asked
    return "embedding" if ctx.base_model_task == "embedding" else "classifier"


def embedding_features(
    ctx: TrainingContext, encoder: Embedder, texts: Sequence[str], dim: int, *, cache: Path
) -> torch.Tensor:
    """(texts, dim): the encoder's embedding of each text, as its runtime serves it. Polls
    `ctx.should_stop()` between passes."""
    import torch
    from safetensors.torch import load_file

    if cache.is_file():
        return load_file(str(cache))["features"]
    rows = torch.zeros((len(texts), dim), dtype=torch.float32)
    for start in range(0, len(texts), EMBEDDING_BATCH_SIZE):
        if ctx.should_stop():
            raise TrainingStopped("stopped while embedding the texts")
        chunk = list(texts[start : start + EMBEDDING_BATCH_SIZE])
        rows[start : start + len(chunk)] = torch.from_numpy(encoder.embed(chunk))
    _save_features(rows, cache)
    return rows


def save_linear_head(
    directory: Path,
    linear: nn.Linear,
    labels: Sequence[str],
    *,
    encoder: str | None = None,
    bundled_pooling: str | None = None,
) -> None:
    """The `linear-head` format: weights, labels, and the spec naming the encoder — a
    registered one by reference (`encoder`), or the version's own `encoder/` directory,
    pooled as `bundled_pooling` says."""
    from safetensors.torch import save_file

    from openmaas.runtimes.linear_head import BUNDLED_ENCODER

    if (encoder is None) == (bundled_pooling is None):
        raise ValueError("a linear head names a registered encoder or bundles one, not both")
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {
        "weight": linear.weight.detach().cpu().float().contiguous(),
        "bias": linear.bias.detach().cpu().float().contiguous(),
    }
    save_file(tensors, str(directory / "weights.safetensors"))
    (directory / "labels.json").write_text(
        json.dumps({"labels": list(labels)}, indent=2) + "\n", encoding="utf-8"
    )
    spec = {
        "task": "text-classification",
        "runtime": LINEAR_HEAD_RUNTIME,
        "format": "safetensors",
        **({"encoder": encoder} if encoder is not None else {}),
        **(
            {"bundled_encoder": BUNDLED_ENCODER, "pooling": bundled_pooling}
            if bundled_pooling is not None
            else {}
        ),
        "probability": "softmax",
        "num_labels": len(labels),
        "input_dim": int(linear.weight.shape[1]),
    }
    (directory / NATIVE_SPEC).write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8")


def feature_cache(
    ctx: TrainingContext, base: Path, split: str, texts: Sequence[str], max_length: int
) -> Path:
    """Where one split's features are kept: named by what they depend on (max_length 0:
    embeddings, cut where the encoder's runtime cuts)."""
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
    from safetensors.torch import load_file

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
    _save_features(rows, cache)
    return rows


def _save_features(rows: torch.Tensor, cache: Path) -> None:
    from safetensors.torch import save_file

    cache.parent.mkdir(parents=True, exist_ok=True)
    partial = cache.with_suffix(".partial")
    save_file({"features": rows}, str(partial))
    os.replace(partial, cache)
