"""Fine-tune a registered transformer encoder (e.g. the packaged MiniLM) with a new
classification head: every weight trains, at a small learning rate with warmup and linear
decay. Where the head reads, `features` says:

- `embedding` (what `auto` picks for a base registered as an embedding model): the mean of
  the encoder's token vectors, its sentence embedding. The result is a `linear-head` version
  that carries the fine-tuned encoder in `encoder/` (served by the `linear-head` runtime over
  the `transformers` runtime). On AG News, 5,472 examples, best of 3 epochs: 0.905 test accuracy,
  against 0.896 through BERT's pooler, which sentence encoders leave untrained.
- `classifier` (`auto` for any other base): the architecture's own classification network
  (BERT: the pooler over the first token). The result is a Hugging Face
  `AutoModelForSequenceClassification` directory with the labels as `id2label`, served by
  the `transformers` runtime.

The slowest recipe and usually the most accurate: on 2 CPU cores a three-epoch job over
5,472 AG News examples at 96 tokens, evaluation included, took 11 minutes (see
docs/benchmarks.md; measured before the two speed-ups below were on by default).

For speed, batches group texts of near-equal token counts (`group_by_length`, on by default,
see `training.batch_order`). bf16 autocast of the forward pass (`precision: bf16-if-supported`,
bf16 where the device computes it in hardware, or `bf16`; see `training.precision`) is opt-in:
weights, AdamW's state and the loss stay fp32, but the one comparison so far,
`benchmarks/finetune_throughput.py` (one epoch over 8,000 SST-2 phrases, batch 32, against
`transformers.Trainer`'s fp32 defaults, on the shared 2-core development machine with
avx512_bf16 under load averages of 3 to 16), had grouping plus bf16 at 0.831 dev accuracy
against Trainer's 0.843 (seed 0), at 0.50x and 1.05x Trainer's wall-clock samples/s in two runs
and 0.97x by CPU time; its 10-step smoke run had them 2.6x faster. Until a quiet machine and
several seeds show bf16 within half a point, the default stays fp32.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from openmaas.training.hyperparameters import COMMON_DEFAULTS, choice
from openmaas.training.recipe import TrainingContext, TrainingResult
from openmaas.training.recipes.classification import ClassificationRecipe

if TYPE_CHECKING:
    from transformers import PreTrainedModel

DEFAULTS: dict[str, Any] = {
    **COMMON_DEFAULTS,
    "n_epochs": 3,
    "batch_size": 16,
    "learning_rate": 5e-5,  # the usual BERT fine-tuning range is 2e-5 to 5e-5
    "warmup_ratio": 0.1,
    "schedule": "linear",
    "weight_decay": 0.01,
    "dropout": 0.1,  # in front of the classification layer
    "max_length": 128,
    "patience": 1,
    "checkpoint_every_steps": 100,  # a checkpoint holds the weights twice plus Adam's state
    "features": "auto",  # embedding | classifier | auto (see the module docstring)
    # Speed at equal accuracy (see the module docstring): batches of near-equal token counts,
    # and bf16 autocast where the device computes bf16 in hardware (auto | bf16 | fp32).
    "group_by_length": True,
    "precision": "fp32",  # "bf16-if-supported": bf16 where the device has it (opt-in, see above)
}
FEATURES = ("auto", "embedding", "classifier")


class FinetuneTransformerRecipe(ClassificationRecipe):
    name = "finetune_transformer"
    needs_base_model = True
    description = "fine-tune a registered transformer encoder with a classification head"
    # Devlin et al. (2019)'s fine-tuning grid, as ranges.
    search_space = {
        "learning_rate": {"type": "float", "low": 1e-5, "high": 1e-4, "log": True},
        "batch_size": {"type": "categorical", "choices": [16, 32]},
        "n_epochs": {"type": "int", "low": 2, "high": 4},
        "warmup_ratio": {"type": "float", "low": 0.0, "high": 0.2},
    }

    def defaults(self) -> dict[str, Any]:
        return dict(DEFAULTS)

    def check(self, hp: Mapping[str, Any]) -> None:
        choice(hp, "features", FEATURES)

    def train(self, ctx: TrainingContext) -> TrainingResult:
        import torch

        from openmaas.training.loop import LabeledItems, augment_text, evaluate, train_classifier
        from openmaas.training.recipes.classification import (
            LabeledSplits,
            classification_result,
        )
        from openmaas.training.recipes.frozen_encoder import LINEAR_HEAD_RUNTIME, features_of
        from openmaas.training.recipes.sequence_classification import (
            RUNTIME,
            PooledClassifier,
            base_with_new_head,
            forward_texts,
            load_pooled_classifier,
            load_sequence_classifier,
            save_pooled_classifier,
            save_sequence_classifier,
            served_max_length,
            token_counts,
        )

        hp = self.resolve(ctx.hyperparameters, len(ctx.train))
        settings = self.loop_settings(hp)
        data = LabeledSplits.from_context(ctx)
        max_length = int(hp["max_length"])
        features = features_of(ctx, hp["features"])
        network: PooledClassifier | PreTrainedModel
        encoder: PreTrainedModel  # where the served length limit comes from
        if features == "embedding":
            pooled, tokenizer, device = base_with_new_head(
                ctx, load_pooled_classifier, data.labels, dropout=hp["dropout"]
            )
            network, encoder = pooled, pooled.encoder
        else:
            whole, tokenizer, device = base_with_new_head(
                ctx, load_sequence_classifier, data.labels, dropout=hp["dropout"]
            )
            network, encoder = whole, whole

        def forward_at(limit: int) -> Callable[[Sequence[str]], torch.Tensor]:
            def forward(texts: Sequence[str]) -> torch.Tensor:
                return forward_texts(network, tokenizer, texts, max_length=limit, device=device)

            return forward

        outcome = train_classifier(
            ctx,
            network=network,
            forward=forward_at(max_length),
            train=LabeledItems(data.train.texts, data.train.labels),
            validation=LabeledItems(data.validation.texts, data.validation.labels),
            labels=data.labels,
            settings=settings,
            augment=augment_text,
            item_tokens=token_counts(tokenizer, data.train.texts, max_length=max_length),
        )

        # The registered metrics describe the model as served: texts cut where the
        # transformers runtime cuts them, not at the training length.
        evaluated = data.evaluation_split()
        evaluation = None
        if evaluated is not None:
            split = evaluated[1]
            limit = served_max_length(encoder, tokenizer)
            evaluation = evaluate(
                network,
                forward_at(limit),
                LabeledItems(split.texts, split.labels),
                data.labels,
                should_stop=ctx.should_stop,
                lengths=token_counts(tokenizer, split.texts, max_length=limit),
            )
        if isinstance(network, PooledClassifier):
            save_pooled_classifier(ctx.output_dir, network, tokenizer, data.labels)
            runtime = LINEAR_HEAD_RUNTIME
        else:
            save_sequence_classifier(ctx.output_dir, network, tokenizer)
            runtime = RUNTIME
        return classification_result(
            ctx,
            recipe=self.name,
            runtime=runtime,
            hyperparameters=hp,
            labels=data.labels,
            outcome=outcome,
            evaluation=evaluation,
            evaluated_on=evaluated[0] if evaluated is not None else None,
            params={"features": features, "training_precision": outcome.precision},
        )
