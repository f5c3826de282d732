"""A bidirectional LSTM classifier trained from scratch over a word-level vocabulary of the
training texts: embeddings, BiLSTM, max pooling over time, dropout, a linear layer. Served by
the `openmaas-nn` runtime.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from openmaas.training.hyperparameters import (
    COMMON_DEFAULTS,
    VOCABULARY_DEFAULTS,
    boolean,
    check_vocabulary,
    choice,
    positive_int,
)
from openmaas.training.recipe import TrainingContext, TrainingResult
from openmaas.training.recipes.classification import ClassificationRecipe

POOLINGS = ("max", "mean", "last")  # over the outputs; last: each direction's final state

DEFAULTS: dict[str, Any] = {
    **COMMON_DEFAULTS,
    **VOCABULARY_DEFAULTS,
    "n_epochs": 5,
    "batch_size": 64,
    "learning_rate": 5e-3,  # AG News, 5,472 examples, 3 epochs: 2e-3 0.738, 5e-3 0.835
    "dropout": 0.3,  # on embeddings, between layers and on the pooled features
    "max_length": 128,
    "embedding_dim": 128,
    "hidden_size": 128,  # per direction
    "n_layers": 1,
    "bidirectional": True,
    "pooling": "max",
}


def check_recurrent(hp: Mapping[str, Any]) -> None:
    """The architecture sizes a recurrent recipe takes (shared with the GRU recipe)."""
    check_vocabulary(hp)
    positive_int(hp, "embedding_dim")
    positive_int(hp, "hidden_size")
    positive_int(hp, "n_layers")
    boolean(hp, "bidirectional")
    choice(hp, "pooling", POOLINGS)


def train_recurrent(
    recipe: str, cell: str, hp: Mapping[str, Any], ctx: TrainingContext
) -> TrainingResult:
    from openmaas.nn.rnn import RNNClassifier, RNNConfig
    from openmaas.nn.saved import LONGEST_INPUT_TOKENS
    from openmaas.training.recipes.word_level import WordLevelRun

    run = WordLevelRun.prepare(ctx, hp)
    network = RNNClassifier(
        RNNConfig(
            vocab_size=run.vocab_size,
            n_labels=len(run.labels),
            cell=cell,
            embedding_dim=run.embedding_width("embedding_dim"),
            hidden_size=hp["hidden_size"],
            n_layers=hp["n_layers"],
            bidirectional=hp["bidirectional"],
            pooling=hp["pooling"],
            dropout=hp["dropout"],
        )
    )
    return run.train_and_save(
        recipe,
        "rnn",
        network,
        max_input_tokens=LONGEST_INPUT_TOKENS,
        embedding=network.embedding,
    )


class BiLSTMRecipe(ClassificationRecipe):
    name = "bilstm"
    data_parallel = True  # the shared loop over a word-level vocabulary
    batch_size_scales_with_data = True
    description = "bidirectional LSTM from scratch with max pooling over time"
    search_space = {
        "learning_rate": {"type": "float", "low": 5e-4, "high": 2e-2, "log": True},
        "dropout": {"type": "float", "low": 0.0, "high": 0.6},
        "hidden_size": {"type": "categorical", "choices": [64, 128, 256]},
        "batch_size": {"type": "categorical", "choices": [16, 32, 64]},
    }

    def defaults(self) -> dict[str, Any]:
        return dict(DEFAULTS)

    def check(self, hp: Mapping[str, Any]) -> None:
        check_recurrent(hp)

    def train(self, ctx: TrainingContext) -> TrainingResult:
        hp = self.resolve(ctx.hyperparameters, len(ctx.train))
        return train_recurrent(self.name, "lstm", hp, ctx)
