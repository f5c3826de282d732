"""A small Transformer encoder trained from scratch over a word-level vocabulary of the
training texts: learned position embeddings, pre-norm self-attention layers, mean pooling,
dropout, a linear layer. Served by the `openmaas-nn` runtime, which accepts texts up to
`max_length` tokens (the positions it learned).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from openmaas.training.hyperparameters import (
    COMMON_DEFAULTS,
    VOCABULARY_DEFAULTS,
    check_vocabulary,
    positive_int,
)
from openmaas.training.recipe import TrainingContext, TrainingResult
from openmaas.training.recipes.classification import ClassificationRecipe

DEFAULTS: dict[str, Any] = {
    **COMMON_DEFAULTS,
    **VOCABULARY_DEFAULTS,
    "n_epochs": 6,
    "batch_size": 32,
    "learning_rate": 1e-3,
    "warmup_ratio": 0.1,  # attention from scratch diverges without a warmup
    "dropout": 0.1,
    "max_length": 128,  # also the positions learned: the longest input served
    "d_model": 128,  # embedding and hidden width
    "n_heads": 4,
    "n_layers": 2,
    "ff_dim": 256,  # feed-forward width
}


class TransformerEncoderRecipe(ClassificationRecipe):
    name = "transformer_encoder"
    data_parallel = True  # the shared loop over a word-level vocabulary
    batch_size_scales_with_data = True
    description = "a small Transformer encoder from scratch with learned positions"
    search_space = {
        "learning_rate": {"type": "float", "low": 1e-4, "high": 3e-3, "log": True},
        "dropout": {"type": "float", "low": 0.0, "high": 0.3},
        "warmup_ratio": {"type": "float", "low": 0.0, "high": 0.2},
        "n_layers": {"type": "int", "low": 1, "high": 4},
    }

    def defaults(self) -> dict[str, Any]:
        return dict(DEFAULTS)

    def check(self, hp: Mapping[str, Any]) -> None:
        check_vocabulary(hp)
        d_model = positive_int(hp, "d_model")
        n_heads = positive_int(hp, "n_heads")
        positive_int(hp, "n_layers")
        positive_int(hp, "ff_dim")
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be a multiple of n_heads ({n_heads})")

    def train(self, ctx: TrainingContext) -> TrainingResult:
        from openmaas.nn.encoder import EncoderConfig, TransformerEncoderClassifier
        from openmaas.training.recipes.word_level import WordLevelRun

        hp = self.resolve(ctx.hyperparameters, len(ctx.train))
        run = WordLevelRun.prepare(ctx, hp)
        network = TransformerEncoderClassifier(
            EncoderConfig(
                vocab_size=run.vocab_size,
                n_labels=len(run.labels),
                max_length=run.max_length,
                d_model=run.embedding_width("d_model"),
                n_heads=hp["n_heads"],
                n_layers=hp["n_layers"],
                ff_dim=hp["ff_dim"],
                dropout=hp["dropout"],
            )
        )
        return run.train_and_save(
            self.name,
            "transformer-encoder",
            network,
            max_input_tokens=run.max_length,
            embedding=network.tokens,
        )
